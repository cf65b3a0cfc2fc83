"""`predict --language` on an MMS-style checkpoint: a served code, auto, or an early error."""

from __future__ import annotations

import json

import pytest

from service.audio import encode_wav
from tests.checkpoints import speech_like
from tests.mms_checkpoints import make_lid_checkpoint, make_mms_checkpoint
from tests.test_cli import run_predict


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-languages")
    mms = make_mms_checkpoint(root)
    lid = make_lid_checkpoint(root, ["deu", "eng"], forced="deu")
    clip = root / "clip.wav"
    clip.write_bytes(encode_wav(speech_like(1.2, seed=2), 16_000))
    return mms, lid, clip


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_language_and_auto(setup):
    mms, lid, clip = setup
    named = run_predict("--model", f"mms={mms}", "--language", "de", str(clip))
    assert named.returncode == 0, named.stderr
    (deu,) = lines(named.stdout)
    assert deu["language"] == "deu" and "language_score" not in deu
    auto = run_predict(
        "--model", f"mms={mms}", "--lid-model", f"mms={lid}", "--language", "auto", str(clip)
    )
    assert auto.returncode == 0, auto.stderr
    (found,) = lines(auto.stdout)
    assert found["language"] == "deu" and found["language_score"] > 0.99
    assert found["text"] == deu["text"]


def test_unknown_language_fails_before_any_file(setup):
    mms, _, clip = setup
    bad = run_predict("--model", f"mms={mms}", "--language", "xx", str(clip))
    assert bad.returncode == 2 and bad.stdout == ""
    assert "'xx' is not served: model 'mms' serves eng, deu, fra" in bad.stderr
