"""service/runtime.py: a checkpoint that ships a decoder is served with it."""

from __future__ import annotations

import json
import shutil

import pytest

from service.audio import Audio
from service.build import build_model
from service.errors import ModelError
from service.schemas import Options
from service.settings import Settings
from tests.checkpoints import speech_like
from tests.lm_cases import write_decoder


def test_a_checkpoint_with_the_layout_decodes_with_its_lm(checkpoints, tmp_path):
    settings = Settings(device="cpu")
    plain = build_model(settings, "plain", str(checkpoints("ctc-group")), warmup=False)
    path = write_decoder(shutil.copytree(checkpoints("ctc-group"), tmp_path / "with-lm"))
    served = build_model(settings, "lm", str(path), warmup=False)
    assert (plain.card().decoder, served.card().decoder) == ("greedy", "beam+lm")
    shutil.rmtree(path / "language_model")
    no_lm = build_model(settings, "alphabet-only", str(path), warmup=False)
    assert no_lm.card().decoder == "greedy"  # an alphabet alone: beam only on request
    clip = Audio(speech_like(1.0), 1.0, 16_000, 1)
    beam = served.predict_now([clip], Options(beam_width=8))[0]
    assert [w.word for w in beam.words or []] == (beam.text or "").split()
    assert all(0 <= w.start < w.end <= 1.0 for w in beam.words or [])


def test_an_alphabet_that_does_not_fit_the_tokenizer_fails_at_load(checkpoints, tmp_path):
    path = write_decoder(shutil.copytree(checkpoints("ctc-group"), tmp_path / "bad"))
    labels = json.loads((path / "alphabet.json").read_text())["labels"]
    (path / "alphabet.json").write_text(json.dumps({"labels": labels[:-1]}))
    with pytest.raises(ModelError, match="alphabet.json"):
        build_model(Settings(device="cpu"), "bad", str(path), warmup=False)
