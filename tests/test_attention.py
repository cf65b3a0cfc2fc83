"""service/wav2vec2/attention.py: kernels by name, and use_kernel switching them for a block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.wav2vec2.attention import (
    _padded_sdpa,
    _per_clip,
    _sdpa,
    biased_per_clip,
    select,
    use_kernel,
)
from service.wav2vec2.loading import load_model
from tests.checkpoints import speech_like


def packed_qkv(lengths: list[int], heads: int = 4, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(sum(lengths), heads, dim, generator=g) for _ in range(3))
    cu = torch.tensor(np.cumsum([0, *lengths]), dtype=torch.int32)
    return q, k, v, cu, max(lengths)


def test_padded_kernel_equals_per_clip_attention():
    q, k, v, cu, max_len = packed_qkv([5, 17, 1, 9])
    per_clip = _per_clip(_sdpa)(q, k, v, cu, max_len)
    padded = _padded_sdpa(q, k, v, cu, max_len)
    torch.testing.assert_close(padded, per_clip, rtol=1e-5, atol=1e-6)


def test_biased_attention_adds_each_clips_bias_to_its_scores():
    """The hook WavLM's relative position bias uses: softmax(q k^T / sqrt(d) + bias) v."""
    lengths = [5, 17, 1, 9]
    q, k, v, cu, _ = packed_qkv(lengths)
    g = torch.Generator().manual_seed(1)
    bias = [torch.randn(4, n, n, generator=g) for n in lengths]
    got = biased_per_clip(q, k, v, cu, bias)
    for (a, b), clip_bias in zip(zip(cu[:-1].tolist(), cu[1:].tolist()), bias):
        qi, ki, vi = (t[a:b].transpose(0, 1) for t in (q, k, v))  # (H, T, d)
        scores = qi @ ki.transpose(-1, -2) * qi.shape[-1] ** -0.5 + clip_bias
        want = (scores.softmax(-1) @ vi).transpose(0, 1)
        torch.testing.assert_close(got[a:b], want, rtol=1e-5, atol=1e-6)
    zero = biased_per_clip(q, k, v, cu, [torch.zeros(4, n, n) for n in lengths])
    torch.testing.assert_close(zero, _per_clip(_sdpa)(q, k, v, cu, max(lengths)))


def test_padded_is_a_kernel_by_name():
    assert select("padded", "cpu", torch.float32) == ("padded", _padded_sdpa)


def test_use_kernel_switches_and_restores(checkpoints):
    model = load_model(str(checkpoints("ctc-group")), attention="eager").model
    attentions = [layer.attention for layer in model.wav2vec2.encoder.layers]
    before = [a.kernel for a in attentions]
    with use_kernel(model, "padded") as name:
        assert name == "padded" and model.wav2vec2.attention_kind == "padded"
        assert all(a.kernel is _padded_sdpa for a in attentions)
    assert model.wav2vec2.attention_kind == "eager"
    assert [a.kernel for a in attentions] == before
    with pytest.raises(RuntimeError), use_kernel(model.wav2vec2, "sdpa"):
        raise RuntimeError("restored on the way out too")
    assert [a.kernel for a in attentions] == before


def test_every_kernel_gives_the_same_transcript_logits(checkpoints):
    loaded = load_model(str(checkpoints("ctc-layer-stable-bias-bin")))
    clips = [speech_like(0.7, seed=1), speech_like(1.3, seed=2)]
    outputs = {}
    for kind in ("eager", "sdpa", "padded"):
        with use_kernel(loaded.model, kind):
            outputs[kind] = loaded.forward(clips)
    for kind in ("sdpa", "padded"):
        for a, b in zip(outputs[kind], outputs["eager"]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_infer_is_the_loaded_models_forward(checkpoints):
    loaded = load_model(str(checkpoints("ctc-group")))
    clips = [speech_like(0.5, seed=3), speech_like(1.1, seed=4)]
    for a, b in zip(loaded.model.infer(clips, loaded.features), loaded.forward(clips)):
        assert a.dtype == np.float32 and np.array_equal(a, b)
