"""training.longform: the held-out long recordings are built as the model card says."""

import json

import numpy as np

from training import longform
from training.data import SAMPLE_RATE


def fake_corpus(tmp_path, n=40, seconds=2.5):
    """heldout-natural with speech of 1s (value 1000) between known lead and tail silences."""
    rng = np.random.default_rng(0)
    audio, meta, offset = [], [], 0
    for i in range(n):
        lead, tail = round(rng.uniform(0, 0.5), 3), round(rng.uniform(0, 0.5), 3)
        speech = np.full(int(seconds * SAMPLE_RATE), 1000, np.int16)
        clip = np.concatenate(
            [
                np.zeros(int(lead * SAMPLE_RATE), np.int16),
                speech,
                np.zeros(int(tail * SAMPLE_RATE), np.int16),
            ]
        )
        meta.append(
            {
                "text": f"word{i}",
                "offset": offset,
                "length": len(clip),
                "lead_s": lead,
                "tail_s": tail,
            }
        )
        audio.append(clip)
        offset += len(clip)
    np.save(tmp_path / "heldout-natural.npy", np.concatenate(audio))
    (tmp_path / "heldout-natural.json").write_text(json.dumps({"utterances": meta}))


def test_recordings_are_long_with_pauses_in_range_and_no_edge_silence(tmp_path):
    fake_corpus(tmp_path, n=60)
    recs = longform.recordings(tmp_path, 2)
    used = [j for _, idx, _ in recs for j in idx]
    assert used == list(range(len(used)))  # consecutive sentences, none twice
    for samples, idx, pauses in recs:
        assert len(samples) >= longform.MIN_SECONDS * SAMPLE_RATE
        assert len(pauses) == len(idx) - 1
        assert all(0.4 <= p <= 1.5 for p in pauses)
        # Speech is exactly the clips' speech: their own lead/tail silences were cut.
        speech = int(np.count_nonzero(samples))
        assert speech == len(idx) * int(2.5 * SAMPLE_RATE)
        silence = len(samples) - speech
        edges = 2 * int(longform.EDGE_SECONDS * SAMPLE_RATE)
        assert silence == edges + sum(int(p * SAMPLE_RATE) for p in pauses)


def test_too_few_sentences_is_an_error(tmp_path):
    fake_corpus(tmp_path, n=5)
    try:
        longform.recordings(tmp_path, 1)
    except ValueError as e:
        assert "too few" in str(e)
    else:
        raise AssertionError("expected ValueError")
