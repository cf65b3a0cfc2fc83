"""--dtype int8 (service/wav2vec2/quantize.py): loads, answers close to float32, is CPU only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import service
from service.cli import PREDICT_SETTINGS, _settings, build_parser
from service.errors import ModelError
from service.settings import Settings
from service.wav2vec2.loading import load_model, pick_dtype
from service.wav2vec2.quantize import Int8Linear, WindowLinear
from training.text import edit_distance

DEMO = Path(service.__file__).parent / "models" / "demo-ctc"
EXAMPLES = [
    Path(__file__).parents[1] / "examples" / f"{name}.wav"
    for name in ("hello_world", "call_me_back", "quick_brown_fox", "weather", "command_stop")
]


def _clips(seconds=(1.0, 1.7)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(int(s * 16_000)).astype(np.float32) * 0.1 for s in seconds]


def test_int8_linear_is_close_to_the_float_one():
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    x = torch.randn(7, 5, 96)
    expected = linear(x)
    got = Int8Linear(linear)(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    # Per-row int8 on both sides: ~1% of the output's scale.
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()


def test_window_linear_computes_the_conv():
    torch.manual_seed(0)
    conv = nn.Conv1d(12, 20, 3, stride=2, bias=True)
    x = torch.randn(2, 12, 41).transpose(1, 2).contiguous().transpose(1, 2)  # strided, as served
    torch.testing.assert_close(WindowLinear(conv)(x), conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "variant", ["ctc-group", "ctc-layer-stable-bias-bin", "ctc-attn-adapter", "classify-weighted"]
)
def test_int8_model_loads_and_stays_close_to_float32(checkpoints, variant):
    path = str(checkpoints(variant))
    fp32 = load_model(path, device="cpu", dtype="float32")
    int8 = load_model(path, device="cpu", dtype="int8")
    assert int8.dtype_name == "int8" and fp32.dtype_name == "float32"
    assert int8.dtype == torch.float32  # activations
    modules = list(int8.model.modules())
    assert not any(type(m) is nn.Linear for m in modules)  # every linear layer quantised
    assert any(isinstance(m, WindowLinear) for m in modules)  # and the front-end convs
    clips = _clips()
    for a, b in zip(fp32.forward(clips), int8.forward(clips)):
        assert a.shape == b.shape
        # Tiny random models (16 channels) amplify rounding, and one activation scale per
        # GEMM call is coarser than one per row: measured 2-24% of the largest logit (the
        # trained demo model's held-out CER moves 0.04 points: training/int8_check.py).
        assert np.abs(a - b).max() < 0.35 * np.abs(a).max()


@pytest.mark.slow
def test_demo_model_int8_transcribes_the_examples_like_float32():
    """int8 moves a frame's best token only where two tokens are near level: the shipped
    weights' one such frame on these clips is the space in LASY DOG (LASYDOG in int8), and
    the held-out CER moves 0.01 points (training/int8_check.py). So each example's int8
    transcript is within one character of float32's, and 98% of its frames agree."""
    models = {
        dtype: load_model(str(DEMO), device="cpu", dtype=dtype) for dtype in ("float32", "int8")
    }
    assert models["float32"].tokenizer is not None
    for path in EXAMPLES:
        x, rate = sf.read(path, dtype="float32")
        assert rate == 16_000
        fp32, int8 = (loaded.forward([x])[0] for loaded in models.values())
        texts = [
            models["float32"].tokenizer.decode(out.argmax(-1).tolist()).text for out in (fp32, int8)
        ]
        assert texts[0] and edit_distance(*texts) <= 1, (path.name, texts)
        assert (fp32.argmax(-1) == int8.argmax(-1)).mean() >= 0.98, path.name
        assert np.abs(fp32 - int8).max() < 0.05 * np.abs(fp32).max(), path.name


def test_int8_is_cpu_only():
    with pytest.raises(ModelError, match="CPU only"):
        pick_dtype("int8", torch.device("cuda"))
    assert pick_dtype("int8", torch.device("cpu")) == torch.float32  # the activations


def test_int8_setting_and_flag():
    assert Settings(dtype="int8").dtype == "int8"
    with pytest.raises(ValueError):
        Settings(dtype="int4")
    args = build_parser().parse_args(["predict", "--dtype", "int8", "a.wav"])
    assert _settings(args, PREDICT_SETTINGS).dtype == "int8"
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32  # int8 only on request


@pytest.mark.parametrize("variant", ["ctc-group", "ctc-layer-stable-bias-bin"])
def test_int8_front_end_batched_equals_alone(checkpoints, variant):
    """The front end quantises per clip and runs each clip in its own calls, so a clip's
    features do not depend on what it is batched with (a loud neighbour of the same length)."""
    int8 = load_model(str(checkpoints(variant)), device="cpu", dtype="int8")
    encoder = int8.model.backbone.feature_extractor
    a, b, c = (torch.from_numpy(x) for x in _clips((3.0, 3.0, 1.7)))
    together = encoder([a, b * 8, c]).split()
    for clip, batched in zip([a, b * 8, c], together):
        torch.testing.assert_close(batched, encoder([clip]).data, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "variant",
    [
        "ctc-group",
        "ctc-layer-stable-bias-bin",
        "ctc-attn-adapter",
        "ctc-add-adapter",
        "classify-weighted",
        "frames-weighted",
        "xvector",
        "base",
        "wavlm-ctc",
        "conformer-ctc-relative",
        "conformer-xvector-weighted",
    ],
)
def test_int8_batched_equals_alone(checkpoints, variant):
    """Every int8 GEMM quantises each clip's rows on their own scale (quantize.ClipRows), so a
    clip's answer does not move when a loud clip joins its batch: the whole model, every head.
    (Not bit-equal: fp32 layers between the GEMMs vectorise differently with the row count.)"""
    int8 = load_model(str(checkpoints(variant)), device="cpu", dtype="int8")
    a, b, c = _clips((1.0, 1.7, 1.3))
    together = int8.forward([a, b * 8, c])
    for clip, batched in zip([a, b * 8, c], together):
        [alone] = int8.forward([clip])
        np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)
