"""Parity with pyctcdecode (the decoder behind transformers' Wav2Vec2ProcessorWithLM, a
test-only reference with KenLM) on the demo model's LM: same text on random logits and on the
demo model's logits for espeak-ng speech.

One difference is corrected in the reference, not here: pyctcdecode ends a beam whose text ends
in a word break by scoring an empty word, which KenLM reads as <unk> (plus the unknown-word
offset and beta), so such beams lose ~20 nats at the end; we score only the sentence end there.
Unpatched, 7 of the 50 random matrices differ in their last word, all from that; patched, none.
Special tokens are masked in the random logits: pyctcdecode spells <s> and </s> as letters,
which we never do.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import service
from service.lm import BeamOptions, beam_decode, load_decoder
from service.wav2vec2.loading import load_model
from service.wav2vec2.tokenizer import CTCTokenizer
from tests.conftest import IN_CI, require_tool
from training.data import VOICES, plan_split
from training.sentences import RESERVED

MODELS = Path(service.__file__).parent / "models"
SPECIALS = [1, 2, 3]  # <s>, </s>, <unk> in the demo vocabulary


def require_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        message = f"{name} is not installed (a test-only reference: see pyproject's test extra)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def reference():
    """pyctcdecode on the committed demo LM, with its empty-last-word scoring corrected."""
    require_module("kenlm")
    require_module("pyctcdecode")
    import pyctcdecode.language_model as plm
    from pyctcdecode import BeamSearchDecoderCTC

    original = plm.LanguageModel.score

    def score(self, prev_state, word, is_last_word=False):
        if word == "" and is_last_word:
            end = self._get_raw_end_score(prev_state)
            return self.alpha * end * plm.LOG_BASE_CHANGE_FACTOR, prev_state
        return original(self, prev_state, word, is_last_word)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plm.LanguageModel, "score", score)
        yield BeamSearchDecoderCTC.load_from_dir(str(MODELS / "demo-ctc"))


@pytest.fixture(scope="module")
def ours():
    return load_decoder(MODELS / "demo-ctc"), CTCTokenizer.from_dir(MODELS / "demo-ctc")


def test_random_logits(reference, ours):
    decoder, tokenizer = ours
    rng = np.random.default_rng(1)
    for k in range(50):
        logits = rng.normal(size=(80, 32)) * 1.5
        logits[:, SPECIALS] -= 100.0
        theirs = reference.decode_beams(logits, beam_width=16)[0][0]
        assert beam_decode(logits, tokenizer, decoder, BeamOptions(beam_width=16)).text == theirs, k


def speech(text: str, voice: str) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "160", "--stdout", text], capture_output=True, check=True
    ).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return soxr.resample(x, rate, 16_000).astype(np.float32)


@pytest.mark.slow
def test_demo_model_utterances(reference, ours):
    require_tool("espeak-ng")
    decoder, tokenizer = ours
    model = load_model(str(MODELS / "demo-ctc"), device="cpu", dtype="float32")
    texts = [
        u.text
        for kind in ("natural", "random")
        for u in plan_split(f"heldout-{kind}", 25, 0, RESERVED)
    ]
    differ = []
    for i, text in enumerate(texts):
        x = speech(text, VOICES[i % len(VOICES)])
        with torch.no_grad():
            logits = model.model([torch.from_numpy(model.features(x))]).data.double().numpy()
        theirs = reference.decode_beams(logits)[0][0]
        if beam_decode(logits, tokenizer, decoder, BeamOptions()).text != theirs:
            differ.append((text, theirs))
    assert differ == []
