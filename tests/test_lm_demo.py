"""The demo model with its LM (service/models/demo-ctc) on the README's examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

import service
from service.decode import transcript
from service.lm import BeamOptions, beam_transcript, load_decoder
from service.wav2vec2.loading import load_model

MODELS = Path(service.__file__).parent / "models"
EXAMPLES = Path(__file__).parents[1] / "examples"
# Greedy misspells all three (HALLOW WORLD, FAX/LASY, WETHER); the LM fixes them.
EXPECTED = {
    "hello_world.wav": "HELLO WORLD",
    "quick_brown_fox.wav": "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "weather.wav": "THE WEATHER IS NICE TODAY",
}


@pytest.fixture(scope="module")
def demo():
    model = load_model(str(MODELS / "demo-ctc"), device="cpu", dtype="float32")
    return model, load_decoder(MODELS / "demo-ctc")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_examples_with_the_lm(demo, name):
    model, decoder = demo
    x, _ = sf.read(EXAMPLES / name, dtype="float32")
    with torch.no_grad():
        logits = model.model([torch.from_numpy(model.features(x))]).data.numpy()
    text, words = beam_transcript(
        logits, model.tokenizer, decoder, BeamOptions(), model.frame_seconds
    )
    assert text == EXPECTED[name]
    assert " ".join(w.word for w in words) == text
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))
    assert all(w.start < w.end for w in words)
    greedy_text, greedy_words = transcript(logits, model.tokenizer, model.frame_seconds)
    assert greedy_text != text  # the case this LM exists for
    # Same frames convention as greedy: the first word starts where greedy's does.
    assert words[0].start == greedy_words[0].start
