"""The demo model's training pieces: the corpus generator (training/data.py) with pauses inside
training utterances (corpus version 2) that disturb nothing else a plan draws, the version
check that redoes older shards; and growing a warm start to more layers (training/train.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import service
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.heads import Wav2Vec2ForCTC
from tests.conftest import require_tool
from training import data, train
from training.sentences import RESERVED


def test_a_quarter_of_training_utterances_pause_and_held_out_sets_never_do():
    plan = data.plan_split("train-00003", 400, 0, RESERVED)
    paused = [u for u in plan if u.pause_word]
    assert 0.15 < len(paused) / len(plan) < 0.35
    for u in paused:
        assert 1 <= u.pause_word < len(u.text.split())
        assert data.PAUSE_SECONDS[0] <= u.pause_s <= data.PAUSE_SECONDS[1]
    for kind in data.HELDOUT_SETS:
        assert not any(u.pause_word for u in data.plan_split(f"heldout-{kind}", 100, 0, RESERVED))


def test_pauses_leave_the_other_draws_as_version_1_made_them(monkeypatch):
    with_pauses = data.plan_split("train-00007", 200, 0, RESERVED)
    monkeypatch.setattr(data, "PAUSE_FRACTION", 0.0)
    without = data.plan_split("train-00007", 200, 0, RESERVED)
    assert [dataclasses.replace(u, pause_word=0, pause_s=0.0) for u in with_pauses] == without


def test_a_paused_utterance_holds_its_silence():
    require_tool("espeak-ng")
    u = next(u for u in data.plan_split("train-00000", 50, 0, RESERVED) if u.pause_word)
    u = dataclasses.replace(u, snr_db=None, pause_s=0.8)
    x = np.abs(data.render(u).astype(np.float32))
    quiet = x < 1e-3 * 32768
    # the longest quiet run inside the speech (outside lead and tail) is the pause
    inner = quiet[int(u.lead_s * data.SAMPLE_RATE) : len(x) - int(u.tail_s * data.SAMPLE_RATE)]
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], inner, [0]]).astype(int))))[::2]
    assert runs.max() / data.SAMPLE_RATE == pytest.approx(0.8, abs=0.1)


def test_older_splits_are_redone(tmp_path):
    assert data._version(tmp_path / "missing.json") == 0
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"utterances": []}))
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"version": data.CORPUS_VERSION, "utterances": []}, indent=0))
    assert data._version(old) == 1
    assert data._version(new) == data.CORPUS_VERSION


def test_growing_layers_keeps_the_function_and_the_trained_layers():
    demo = Path(service.__file__).parent / "models" / "demo-ctc"
    model = Wav2Vec2ForCTC(Wav2Vec2Config.from_file(demo / "config.json"))
    train.load_weights(model, demo)
    old = model.config.num_hidden_layers
    grown = train.grow(model, old + 4)
    assert grown.config.num_hidden_layers == old + 4
    train.check_grown(model, grown)  # asserts equal outputs on random clips
    before, after = model.wav2vec2.encoder.layers, grown.wav2vec2.encoder.layers
    for i in range(old):  # trained layers spread out in order, weights as they were
        j = i * (old + 4) // old
        assert torch.equal(before[i].feed_forward.output_dense.weight,
                           after[j].feed_forward.output_dense.weight)
    new = set(range(old + 4)) - {i * (old + 4) // old for i in range(old)}
    assert len(new) == 4
    for j in new:
        assert not after[j].attention.out_proj.weight.any()
        assert after[j].feed_forward.intermediate_dense.weight.any()  # learnable, not dead
