"""Parity with transformers and batch invariance, on tiny random checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.wav2vec2.loading import load_model
from service.wav2vec2.packed import Packed
from tests.checkpoints import VARIANTS, speech_like

transformers = pytest.importorskip("transformers")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def reference(path, architecture: str, audio: np.ndarray):
    """transformers' answer for one clip alone, unpadded."""
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(path)
    model = getattr(transformers, architecture).from_pretrained(path).eval()
    inputs = fe(audio, sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        out = model(inputs.input_values)
    if architecture.endswith("ForXVector"):
        return out.embeddings[0]
    if architecture.endswith("Model"):
        return out.last_hidden_state[0].mean(dim=0)
    return out.logits[0]


def ours(loaded, clips: list[np.ndarray]) -> list[torch.Tensor]:
    inputs = [torch.from_numpy(loaded.features(c)) for c in clips]
    with torch.no_grad():
        out = loaded.model(inputs)
    return out.split() if isinstance(out, Packed) else list(out)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_parity_with_transformers(checkpoints, variant, attention):
    path = checkpoints(variant)
    architecture = VARIANTS[variant][0]
    loaded = load_model(str(path), attention=attention)
    audio = speech_like(1.3, seed=1)
    expected = reference(path, architecture, audio)
    (got,) = ours(loaded, [audio])
    assert got.shape == expected.shape
    assert rel_err(got, expected) <= 1e-4


@pytest.mark.parametrize("variant", ["ctc-group", "ctc-layer-stable-bias-bin", "ctc-add-adapter"])
def test_transcript_and_word_offsets_match_transformers(checkpoints, variant):
    path = checkpoints(variant)
    loaded = load_model(str(path))
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(path)
    for seed in range(3):
        audio = speech_like(2.0, seed=seed)
        ids = reference(path, "Wav2Vec2ForCTC", audio).argmax(-1).tolist()
        want = tokenizer.decode(ids, output_word_offsets=True)
        got = loaded.tokenizer.decode(ids)
        assert got.text == want.text
        assert [(w.word, w.start, w.end) for w in got.words] == [
            (w["word"], w["start_offset"], w["end_offset"]) for w in want.word_offsets
        ]


@pytest.mark.parametrize(
    "variant",
    [
        "ctc-group",
        "ctc-layer-stable-bias-bin",
        "classify-weighted",
        "frames-weighted",
        "xvector",
        "ctc-add-adapter",
    ],
)
def test_batch_invariance(checkpoints, variant):
    """A clip alone and inside batches of 1..16 clips of other lengths gives the same output."""
    loaded = load_model(str(checkpoints(variant)))
    rng = np.random.default_rng(0)
    target = speech_like(3.7, seed=42)
    (alone,) = ours(loaded, [target])
    for size in (2, 5, 16):
        lengths = rng.uniform(0.1, 30.0 if size == 2 else 8.0, size - 1)
        lengths = np.maximum(lengths, loaded.min_samples / 16_000 + 0.01)  # shorter is refused
        others = [speech_like(s, seed=i) for i, s in enumerate(lengths)]
        position = int(rng.integers(0, size))
        batch = others[:position] + [target] + others[position:]
        got = ours(loaded, batch)[position]
        assert got.shape == alone.shape
        assert rel_err(got, alone) <= 1e-4


def test_equal_length_clips_share_a_conv_call_and_stay_exact(checkpoints):
    loaded = load_model(str(checkpoints("ctc-group")))
    clips = [speech_like(1.0, seed=s) for s in range(4)]
    together = ours(loaded, clips)
    for clip, got in zip(clips, together):
        (alone,) = ours(loaded, [clip])
        assert rel_err(got, alone) <= 1e-5
