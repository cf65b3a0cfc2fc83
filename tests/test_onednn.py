"""fp32 linear layers on oneDNN (service/wav2vec2/onednn.py): same outputs as MKL's to rounding,
batch invariance kept, and the choice reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from service.wav2vec2.loading import load_model
from service.wav2vec2.onednn import OneDNNLinear, available, use_onednn
from tests.checkpoints import speech_like


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


pytestmark = pytest.mark.skipif(not available(), reason="this torch has no oneDNN")


def test_onednn_linear_computes_the_linear_layer():
    torch.manual_seed(0)
    for bias in (True, False):
        linear = nn.Linear(96, 40, bias=bias)
        x = torch.randn(37, 96)
        torch.testing.assert_close(OneDNNLinear(linear)(x), linear(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "variant",
    [
        "ctc-group",
        "ctc-layer-stable-bias-bin",
        "xvector",
        "wavlm-ctc-stable-bias",
        "conformer-ctc-rotary-layer-bias",
        "conformer-ctc-relative",
    ],
)
def test_onednn_model_equals_the_mkl_one_and_stays_batch_invariant(checkpoints, variant):
    path = str(checkpoints(variant))
    mkl = load_model(path, device="cpu", dtype="float32", linear="mkl")
    dnn = load_model(path, device="cpu", dtype="float32", linear="onednn")
    assert dnn.onednn and not mkl.onednn
    encoder_gemms = ("qkv", "q_proj", "k_proj", "v_proj", "out_proj", "projection")
    encoder_gemms += ("intermediate_dense", "output_dense")
    kinds = [(n.rsplit(".", 1)[-1], type(m)) for n, m in dnn.model.named_modules()]
    assert sum(t is OneDNNLinear for _, t in kinds) > dnn.config.num_hidden_layers
    assert nn.Linear not in [t for n, t in kinds if n in encoder_gemms]
    if "rotary" not in variant:  # q/k/v fused: the fp32 views into it are dropped, not kept
        assert all(not hasattr(m, "q_proj") for m in dnn.model.modules() if hasattr(m, "qkv"))
    clips = [speech_like(s, seed=i) for i, s in enumerate((0.6, 1.9, 1.1))]
    together = dnn.forward(clips)
    for i, (a, b) in enumerate(zip(mkl.forward(clips), together)):
        assert rel_err(b, a) <= 1e-5
        (alone,) = dnn.forward([clips[i]])
        assert rel_err(together[i], alone) <= 1e-5


def test_auto_keeps_mkl_unless_onednn_is_clearly_faster(checkpoints, monkeypatch):
    from service.wav2vec2 import onednn

    path = str(checkpoints("ctc-group"))
    monkeypatch.setattr(onednn, "_faster_on_onednn", lambda linear: False)
    assert not load_model(path, device="cpu", dtype="float32").onednn
    monkeypatch.setattr(onednn, "_faster_on_onednn", lambda linear: True)
    assert load_model(path, device="cpu", dtype="float32").onednn
    # never under int8 (its own GEMMs), nor for MMS adapters' or heads' layers
    assert not load_model(path, device="cpu", dtype="int8").onednn
    model = load_model(str(checkpoints("ctc-attn-adapter")), device="cpu", dtype="float32")
    adapters = [m for n, m in model.model.named_modules() if n.endswith(("linear_1", "linear_2"))]
    assert adapters and all(type(m) is nn.Linear for m in adapters)
    assert type(model.model.lm_head) is nn.Linear


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="linear backend"):
        use_onednn(nn.Sequential(), "blas")


def test_int8_quantises_a_rotary_conformer(checkpoints):
    """Rotary projects q/k and v from different inputs (no fused qkv): int8 keeps all three."""
    path = str(checkpoints("conformer-ctc-rotary-layer-bias"))
    fp32 = load_model(path, device="cpu", dtype="float32", linear="mkl")
    int8 = load_model(path, device="cpu", dtype="int8")
    clip = [speech_like(1.2, seed=3)]
    a, b = fp32.forward(clip)[0], int8.forward(clip)[0]
    assert np.abs(a - b).max() < 0.2 * np.abs(a).max()


def test_the_linear_setting_pins_the_gemm_library(checkpoints, monkeypatch):
    """--linear / W2V_LINEAR reaches load_model: no timing decides when it is pinned."""
    from service.build import build_model
    from service.settings import Settings

    timed = []
    monkeypatch.setattr("service.wav2vec2.onednn._faster_on_onednn", lambda m: timed.append(m))
    path = str(checkpoints("ctc-group"))
    for linear, expected in (("onednn", True), ("mkl", False)):
        settings = Settings(linear=linear, device="cpu")
        assert build_model(settings, "m", path, warmup=False)._loaded.onednn is expected
    assert not timed
    monkeypatch.setenv("W2V_LINEAR", "mkl")
    assert Settings().linear == "mkl"
