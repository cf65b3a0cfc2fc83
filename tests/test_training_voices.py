"""The pieces of training/speakers.py and training/vad.py that decide what is measured: speaker
splits, the equal error rate and its threshold, mixtures and their frame labels, boundary
error. No model, no espeak-ng: milliseconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training import speakers, vad
from training.data import HELDOUT_VARIANTS
from training.export import MODEL_DIR


def test_speaker_splits_are_disjoint_and_only_heldout_uses_heldout_variants():
    groups = speakers.speakers()
    names = {k: {s.name for s in v} for k, v in groups.items()}
    assert not names["train"] & names["dev"] and not names["train"] & names["heldout"]
    assert len(names["dev"]) == speakers.DEV_SPEAKERS
    assert len(names["heldout"]) == speakers.HELDOUT_SPEAKERS
    assert all(s.variant in HELDOUT_VARIANTS for s in groups["heldout"])
    assert not any(s.variant in HELDOUT_VARIANTS for s in groups["train"] + groups["dev"])
    assert {s.voice for s in groups["train"]} == set(speakers.ALL_VOICES)


def test_a_speaker_keeps_its_pitch_and_clips_are_planned_the_same_every_time():
    s = speakers.Speaker("en-us", "m3")
    assert s.pitch == speakers.Speaker("en-us", "m3").pitch and 25 <= s.pitch <= 75
    a, b = speakers.plan("dev", 20, 5), speakers.plan("dev", 20, 5)
    assert a == b and [c.speaker for c in a] == [k % 5 for k in range(20)]
    assert all(3 <= len(c.text.split()) <= 10 and -4 <= c.pitch <= 4 for c in a)


def test_equal_error_rate_and_threshold():
    same = np.array([0.9, 0.8, 0.7, 0.6, 0.3])
    different = np.array([0.1, 0.2, 0.4, 0.5, 0.65])
    eer, threshold = speakers.equal_error(same, different)
    rates = speakers.rates_at(same, different, threshold)
    assert eer == pytest.approx(0.2)
    assert rates == {"false_reject": pytest.approx(0.2), "false_accept": pytest.approx(0.2)}
    assert speakers.equal_error(np.array([0.9, 0.8]), np.array([0.1, 0.2]))[0] == 0.0


def test_trial_scores_pair_every_clip_once():
    emb = np.eye(4, dtype=np.float32)[[0, 0, 1, 2]]
    same, different = speakers.trial_scores(emb, torch.tensor([7, 7, 8, 9]))
    assert same.tolist() == [1.0] and sorted(different.tolist()) == [0.0] * 5


def test_prototypical_loss_prefers_matching_pairs():
    loss = speakers.Prototypical()
    matched = torch.eye(4).repeat_interleave(2, dim=0)  # speaker k: clips 2k, 2k+1 equal
    shuffled = matched[[0, 3, 2, 5, 4, 7, 6, 1]]
    with torch.no_grad():
        assert float(loss(matched)) < float(loss(shuffled))


def test_fast_xvector_forward_equals_the_serving_forward():
    config = speakers.xvector_config(MODEL_DIR, 1)
    model = speakers.Wav2Vec2ForXVector(config).eval()
    rng = np.random.default_rng(0)
    waves = [torch.from_numpy(rng.normal(size=n).astype(np.float32)) for n in (8000, 12345)]
    with torch.no_grad():
        fast = speakers.embeddings_fast(model, waves)
        model.wav2vec2.set_attention("auto")
        served = model(waves)
    torch.testing.assert_close(fast, served, rtol=1e-4, atol=1e-4)


def test_mixtures_keep_utterances_apart_and_inside_and_label_frames_by_centre():
    rng = np.random.default_rng(3)
    pool = [np.full(n, 0.5, np.float32) for n in (9000, 16000, 20000)]
    config = vad.vad_config(MODEL_DIR, 1)
    for _ in range(30):
        m = vad.mix(rng, pool)
        assert vad.MIX_SECONDS[0] * 16_000 <= len(m.audio) <= vad.MIX_SECONDS[1] * 16_000
        assert 1 <= len(m.speech) <= 3 and np.abs(m.audio).max() <= 1
        for a, b in zip(m.speech, m.speech[1:]):
            assert b.start - a.end >= vad.MIN_GAP_S * 16_000
        assert all(0 <= r.start < r.end <= len(m.audio) for r in m.speech + m.noise)
        labels = vad.frame_labels(m, config)
        assert labels.shape == (config.num_frames(len(m.audio)), 2)
        centre = 320 * np.arange(len(labels)) + 200
        inside = np.zeros(len(labels), bool)
        for r in m.speech:
            inside |= (centre >= r.start) & (centre < r.end)
        assert (labels[:, 0].numpy() == inside).all()


def test_noise_kinds_have_unit_rms():
    rng = np.random.default_rng(0)
    for kind in vad.NOISE_KINDS:
        x = vad.noise(kind, 16_000, rng)
        rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
        assert np.isfinite(x).all() and rms == pytest.approx(1, rel=1e-3)


def test_boundary_errors_measure_each_true_edge_to_the_nearest_found_one():
    truth = [vad.Region(16_000, 32_000), vad.Region(48_000, 64_000)]
    found = [(1.02, 1.9), (3.0, 4.1)]
    assert vad.boundary_errors(truth, found) == pytest.approx([0.02, 0.1, 0.0, 0.1])
    assert vad.boundary_errors(truth, []) == []
