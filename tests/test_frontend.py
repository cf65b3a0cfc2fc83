"""The front end computed in pieces (frontend.in_pieces): what every clip takes on the CPU.
Parity with transformers on clips long enough for many pieces, and with the layer-by-layer
path (ConvLayer.forward, the GPU's) in fp32, bf16 and int8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.wav2vec2 import frontend
from service.wav2vec2.loading import load_model
from tests.checkpoints import speech_like
from tests.test_wav2vec2 import VARIANTS, ours, reference, rel_err

FRONT_ENDS = [  # group norm, layer norm + conv bias, relu, odd positional kernel, Data2Vec
    "ctc-group",
    "ctc-layer-stable-bias-bin",
    "ctc-relu-nomask",
    "hubert-ctc-batchnorm-oddkernel",
    "data2vec-ctc",
]
SECONDS = 9.3  # the fourth layer's 3,700 frames: 15 pieces; the group-norm sums in 30


@pytest.fixture
def piece_calls(monkeypatch):
    calls = []
    pieces = frontend.in_pieces

    def counted(layers, x):
        calls.append(x.shape)
        return pieces(layers, x)

    monkeypatch.setattr(frontend, "in_pieces", counted)
    return calls


def layer_by_layer(loaded, clips: list[np.ndarray]) -> torch.Tensor:
    """The front end as the GPU computes it, on the CPU: each layer over the whole clips."""
    x = torch.stack([torch.from_numpy(c) for c in clips])[:, None].to(loaded.dtype)
    with torch.no_grad():
        for layer in loaded.model.backbone.feature_extractor.layers:
            x = layer(x)
    return x


def pieces(loaded, clips: list[np.ndarray]) -> torch.Tensor:
    x = torch.stack([torch.from_numpy(c) for c in clips])[:, None].to(loaded.dtype)
    with torch.no_grad():
        return frontend.in_pieces(loaded.model.backbone.feature_extractor.layers, x)


@pytest.mark.parametrize("variant", FRONT_ENDS)
def test_long_clips_match_transformers(checkpoints, variant, piece_calls):
    path = checkpoints(variant)
    loaded = load_model(str(path))
    audio = speech_like(SECONDS, seed=3)
    (got,) = ours(loaded, [audio])
    assert piece_calls, "the clip did not take the pieces path"
    assert rel_err(got, reference(path, VARIANTS[variant][0], audio)) <= 1e-4


@pytest.mark.parametrize("variant", ["ctc-group", "ctc-layer-stable-bias-bin"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pieces_equal_the_layer_by_layer_path(checkpoints, variant, dtype):
    path = str(checkpoints(variant))
    loaded = load_model(path, dtype=dtype)
    clips = [speech_like(SECONDS, seed=s) for s in range(2)]  # one length: one call for both
    got, whole = pieces(loaded, clips), layer_by_layer(loaded, clips)
    assert got.shape == whole.shape
    if dtype == "float32":
        assert rel_err(got, whole) <= 1e-5
    else:  # 8 bits: both roundings of the same sums, no further from fp32
        exact = layer_by_layer(load_model(path, dtype="float32"), clips)
        err_pieces, err_whole = rel_err(got.float(), exact), rel_err(whole.float(), exact)
        assert err_pieces <= 2 * err_whole + 1e-2, (err_pieces, err_whole)


@pytest.mark.parametrize("variant", ["ctc-group", "ctc-layer-stable-bias-bin"])
def test_int8_pieces_stay_as_close_to_float32_as_layer_by_layer(checkpoints, variant):
    """int8 quantises each piece's activations with their own scale (one per GEMM call)
    instead of one per clip: another rounding of the same sums, about as far from fp32."""
    path = str(checkpoints(variant))
    int8 = load_model(path, dtype="int8")
    clips = [speech_like(SECONDS, seed=s) for s in range(2)]
    exact = layer_by_layer(load_model(path, dtype="float32"), clips)
    got, whole = pieces(int8, clips), layer_by_layer(int8, clips)
    err_pieces, err_whole = rel_err(got, exact), rel_err(whole, exact)
    assert err_pieces <= 1.5 * err_whole + 5e-3, (err_pieces, err_whole)


def test_group_norm_statistics_hold_with_silence_first_and_a_drifting_offset(checkpoints):
    """The sums are shifted by the first piece's means: a silent first piece and an offset that
    drifts far from it must not cost precision (E[d^2] - E[d]^2 on large d)."""
    loaded = load_model(str(checkpoints("ctc-group")))
    audio = speech_like(SECONDS, seed=5)
    audio[: 16_000 // 2] = 0.0  # first pieces silent
    audio += np.linspace(0.0, 3.0, len(audio), dtype=np.float32)  # offset growing to 3
    assert rel_err(pieces(loaded, [audio]), layer_by_layer(loaded, [audio])) <= 1e-5


@pytest.mark.parametrize("seconds", [0.025, 0.0251, 0.03, 0.5])
def test_clips_of_one_piece(checkpoints, seconds):
    """From the receptive field (400 samples, one frame; the service refuses less) up: the
    frames transformers gives."""
    path = checkpoints("ctc-group")
    loaded = load_model(str(path))
    audio = speech_like(seconds, seed=1)
    frames = loaded.model.backbone.feature_extractor([torch.from_numpy(audio)]).lengths[0]
    assert frames == (len(audio) - 400) // 320 + 1
    (got,) = ours(loaded, [audio])
    assert rel_err(got, reference(path, VARIANTS["ctc-group"][0], audio)) <= 1e-4
