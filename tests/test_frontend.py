"""The first two front-end convs computed in pieces (frontend.first_two_in_pieces): what every
clip of 2 s and more takes on the CPU. Parity with transformers on clips long enough for
several pieces, and with the layer-by-layer path it replaces."""

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
SECONDS = 9.3  # the second conv's 14,500 frames: 15 pieces, the group-norm sums in 30


@pytest.fixture
def fused_calls(monkeypatch):
    calls = []
    fused = frontend.first_two_in_pieces

    def counted(first, second, x):
        calls.append(x.shape)
        return fused(first, second, x)

    monkeypatch.setattr(frontend, "first_two_in_pieces", counted)
    return calls


@pytest.mark.parametrize("variant", FRONT_ENDS)
def test_long_clips_match_transformers(checkpoints, variant, fused_calls):
    path = checkpoints(variant)
    loaded = load_model(str(path))
    audio = speech_like(SECONDS, seed=3)
    (got,) = ours(loaded, [audio])
    assert fused_calls, "the clip did not take the pieces path"
    assert rel_err(got, reference(path, VARIANTS[variant][0], audio)) <= 1e-4


@pytest.mark.parametrize("variant", ["ctc-group", "ctc-layer-stable-bias-bin"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pieces_equal_the_layer_by_layer_path(checkpoints, variant, dtype, monkeypatch):
    path = str(checkpoints(variant))
    loaded = load_model(path, dtype=dtype)
    clips = [speech_like(SECONDS, seed=s) for s in range(2)]  # one length: one call for both
    fused = loaded.forward(clips)  # the serving forward: casts the input to the model's dtype
    monkeypatch.setattr(frontend, "FUSE_FROM", 10**12)
    whole = loaded.forward(clips)
    for a, b in zip(fused, whole):
        if dtype == "float32":
            assert rel_err(torch.from_numpy(a), torch.from_numpy(b)) <= 1e-5
    if dtype == "bfloat16":  # 8 bits: both roundings of the same sums, no further from fp32
        exact = load_model(path, dtype="float32").forward(clips)
        for a, b, ref in zip(fused, whole, exact):
            ref_t = torch.from_numpy(ref)
            err_fused = rel_err(torch.from_numpy(a), ref_t)
            err_whole = rel_err(torch.from_numpy(b), ref_t)
            assert err_fused <= 2 * err_whole + 1e-2, (err_fused, err_whole)


def test_short_clips_keep_the_layer_by_layer_path(checkpoints, fused_calls):
    loaded = load_model(str(checkpoints("ctc-group")))
    ours(loaded, [speech_like(1.5)])
    assert not fused_calls  # under FUSE_FROM


@pytest.mark.parametrize("variant", ["ctc-group", "ctc-layer-stable-bias-bin"])
def test_int8_pieces_stay_as_close_to_float32_as_layer_by_layer(
    checkpoints, variant, fused_calls, monkeypatch
):
    """int8's second conv reads the first layer's range in a pass of its own, then quantises
    piece by piece with that one scale: the same scale as the whole tensor's, so only values on
    a rounding boundary (group-norm sums in another order) can land one step apart."""
    path = str(checkpoints(variant))
    int8 = load_model(path, dtype="int8")
    clips = [speech_like(SECONDS, seed=s) for s in range(2)]
    fused = int8.forward(clips)
    assert fused_calls
    monkeypatch.setattr(frontend, "FUSE_FROM", 10**12)
    whole = int8.forward(clips)
    exact = load_model(path, dtype="float32").forward(clips)
    for a, b, ref in zip(fused, whole, exact):
        ref_t = torch.from_numpy(ref)
        err_fused = rel_err(torch.from_numpy(a), ref_t)
        err_whole = rel_err(torch.from_numpy(b), ref_t)
        assert err_fused <= 1.5 * err_whole + 1e-3, (err_fused, err_whole)
        assert rel_err(torch.from_numpy(a), torch.from_numpy(b)) <= 0.1


def test_group_norm_statistics_hold_with_silence_first_and_a_drifting_offset(
    checkpoints, monkeypatch
):
    """The sums are shifted by the first piece's means: a silent first piece and an offset that
    drifts far from it must not cost precision (E[d^2] - E[d]^2 on large d)."""
    loaded = load_model(str(checkpoints("ctc-group")))
    audio = speech_like(SECONDS, seed=5)
    audio[: 16_000 // 2] = 0.0  # first pieces silent
    audio += np.linspace(0.0, 3.0, len(audio), dtype=np.float32)  # offset growing to 3
    fused = loaded.model.backbone.feature_extractor([torch.from_numpy(audio)]).data
    monkeypatch.setattr(frontend, "FUSE_FROM", 10**12)
    whole = loaded.model.backbone.feature_extractor([torch.from_numpy(audio)]).data
    assert rel_err(fused, whole) <= 1e-5
