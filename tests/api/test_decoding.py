"""Transcript decoding over the API with the demo model, which ships its LM (issue 16): beam+LM
by default, greedy on request, hotwords, the OpenAI prompt, limits, timing, the stream."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
import torch

from service.decode import transcript
from service.lm import BeamOptions, beam_decode, load_decoder
from service.settings import DEFAULT_MODEL_NAME, MODELS_DIR, Settings
from service.wav2vec2.loading import load_model
from tests.api.helpers import Served, assert_error, serve

DEMO = MODELS_DIR / DEFAULT_MODEL_NAME
EXAMPLES = Path(__file__).parents[2] / "examples"
HAVE_LM = (DEMO / "language_model").is_dir()
# What was said (training/examples.py), for the examples the shipped LM gets right.
LM_TEXT = {
    "hello_world": "HELLO WORLD",
    "quick_brown_fox": "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
}
# The example greedy misspells and the LM fixes (round 16: LASY DOG; HELLO WORLD is right since
# round 10). Not weather.wav since round 12: greedy says WETHER and the LM makes it WHETHER.
MISSED = "quick_brown_fox"
# The hotword tests' example: greedy's WETHER is a word of its own there, where round 12's
# hotword LASYD led the search into LASYDOG (the hotword lifts the prefix of a longer unknown word).
HEARD = "weather"
SAID = {**LM_TEXT, HEARD: "THE WEATHER IS NICE TODAY"}
GREEDY_MISSES = (MISSED,)


@cache
def logits_of(name: str) -> np.ndarray:
    model = load_model(str(DEMO), device="cpu", dtype="float32")
    x, _ = sf.read(EXAMPLES / f"{name}.wav", dtype="float32")
    with torch.no_grad():
        return model.model([torch.from_numpy(model.features(x))]).data.numpy()


@cache
def greedy_text(name: str) -> str:
    """The demo model's argmax spelling of examples/NAME.wav, computed here, not over the API.
    Greedy spells by ear and misses a word of GREEDY_MISSES' examples, which is what the
    LM and hotword tests below rely on (checked in test_greedy_misses_what_the_lm_fixes)."""
    model = load_model(str(DEMO), device="cpu", dtype="float32")
    return transcript(logits_of(name), model.tokenizer, model.frame_seconds)[0]


def misheard(name: str) -> str:
    """The first word of SAID[name] that greedy spells otherwise, as greedy spells it."""
    pairs = zip(greedy_text(name).split(), SAID[name].split())
    return next(heard for heard, said in pairs if heard != said)


def settings(**overrides: object) -> Settings:
    values: dict = dict(model=[f"demo={DEMO}"], device="cpu", max_wait_ms=50, max_hotwords=5)
    return Settings(**{**values, **overrides})


def example(name: str) -> bytes:
    return (EXAMPLES / f"{name}.wav").read_bytes()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo() -> AsyncIterator[Served]:
    async with serve(settings()) as s:
        yield s


async def transcribe(demo: Served, name: str = "hello_world", **fields: object):
    files = {"file": (f"{name}.wav", example(name), "audio/wav")}
    return await demo.client.post("/v1/transcribe", files=files, data=fields)


pytestmark = [
    pytest.mark.skipif(not HAVE_LM, reason="the demo model with its LM is not here"),
    pytest.mark.asyncio(loop_scope="module"),
]


async def test_the_card_says_the_model_decodes_with_its_lm(demo):
    cards = (await demo.client.get("/v1/models")).json()["data"]
    assert [c["decoder"] for c in cards] == ["beam+lm"]


async def test_default_is_beam_with_the_lm(demo):
    r = await transcribe(demo)
    body = r.json()
    assert r.status_code == 200 and body["text"] == "HELLO WORLD"
    assert [w["word"] for w in body["words"]] == ["HELLO", "WORLD"]
    assert 0 <= body["words"][0]["start"] < body["words"][0]["end"] <= body["words"][1]["start"]
    assert 0 < float(r.headers["x-decode-time"]) <= float(r.headers["x-total-time"])


async def test_greedy_misses_what_the_lm_fixes():
    """The premise of the tests below: greedy gets a word of these examples wrong."""
    for name in GREEDY_MISSES:
        assert greedy_text(name) != LM_TEXT[name], name


async def test_greedy_on_request_gives_the_argmax_text(demo):
    r = await transcribe(demo, MISSED, decoder="greedy")
    assert r.json()["text"] == greedy_text(MISSED) != LM_TEXT[MISSED]
    assert float(r.headers["x-decode-time"]) >= 0  # greedy's time counts too
    files = {"file": ("hello_world.wav", example("hello_world"), "audio/wav")}
    by_query = await demo.client.post("/v1/transcribe?decoder=greedy", files=files)
    assert by_query.json()["text"] == greedy_text("hello_world")


async def test_alpha_and_beta_reach_the_beam_search(demo):
    """The request's alpha = beta = 0 is what the search ran with (computed here with the same
    decoder), not the model's own weights, whose answer is right. (At 0/0 the LM still has a
    say: an out-of-vocabulary word keeps its unk_score_offset, as in pyctcdecode; so this is
    not the LM-free beam search.)"""
    r = await transcribe(demo, MISSED, decoder="beam", alpha=0, beta=0)
    tokenizer = load_model(str(DEMO), device="cpu", dtype="float32").tokenizer
    decoder = load_decoder(DEMO)
    zero = beam_decode(logits_of(MISSED), tokenizer, decoder, BeamOptions(alpha=0, beta=0))
    assert r.json()["text"] == zero.text != LM_TEXT[MISSED]  # the model's weights fix it


async def test_hotwords_lift_a_word(demo):
    # A word as greedy heard it, which the LM corrects away, stays when it is a hotword; in
    # the vocabulary's case or not (the search spells upper case).
    heard = misheard(HEARD)
    assert heard not in SAID[HEARD].split()
    r = await transcribe(demo, HEARD, hotwords=heard.lower())
    assert heard in r.json()["text"].split()
    # Without the LM, a hotword fixes the word greedy misspells; a hotword not said is ignored.
    assert "WEATHER" not in greedy_text(HEARD).split()
    r = await transcribe(demo, HEARD, alpha=0, beta=0, hotwords=["HELLO", "weather"])
    words = r.json()["text"].split()
    assert "WEATHER" in words and "HELLO" not in words


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"beam_width": "-1"}, "invalid_beam_width"),
        ({"beam_width": "100000"}, "invalid_beam_width"),
        ({"decoder": "lm"}, "invalid_decoder"),
        ({"hotwords": ",".join(f"w{i}" for i in range(6))}, "too_many_hotwords"),  # setting: 5
        ({"hotwords": "x" * 1_000_000}, "hotword_too_long"),
        ({"alpha": "nan"}, "invalid_field"),
    ],
)
async def test_bad_values_are_422_with_their_code(demo, fields, code):
    assert_error(await transcribe(demo, **fields), 422, code)


async def test_openai_prompt_words_become_hotwords(demo):
    files = {"file": ("hello_world.wav", example("hello_world"), "audio/wav")}
    plain = await demo.client.post("/v1/audio/transcriptions", files=files, data={"model": ""})
    assert plain.json()["text"] == LM_TEXT["hello_world"]
    # A long prompt is not refused: its first max_hotwords distinct words are used, so the
    # word as greedy heard it (which the LM alone corrects) comes back.
    heard = misheard(HEARD).capitalize()
    prompt = f"{heard}, {heard} there! " + " ".join(f"w{i}" for i in range(20))
    data = {"model": "whisper-1", "prompt": prompt}
    heard_clip = {"file": (f"{HEARD}.wav", example(HEARD), "audio/wav")}
    prompted = await demo.client.post("/v1/audio/transcriptions", files=heard_clip, data=data)
    assert prompted.status_code == 200
    assert heard.upper() in prompted.json()["text"].split()
    data = {"model": "whisper-1", "decoder": "greedy"}
    greedy = await demo.client.post("/v1/audio/transcriptions", files=files, data=data)
    assert greedy.json()["text"] == greedy_text("hello_world")
    data = {"model": "whisper-1", "beam_width": "0"}
    bad = await demo.client.post("/v1/audio/transcriptions", files=files, data=data)
    assert_error(bad, 422, "invalid_beam_width")


async def test_beam_decoding_is_batch_invariant(demo):
    alone = [(await transcribe(demo, n)).json() for n in ("hello_world", MISSED)]
    together = await asyncio.gather(*(transcribe(demo, n) for n in ("hello_world", MISSED)))
    assert [r.json() for r in together] == alone
    assert [a["text"] for a in alone] == [LM_TEXT["hello_world"], LM_TEXT[MISSED]]


async def test_decode_time_is_a_metric_by_decoder(demo):
    await transcribe(demo, decoder="greedy")
    text = (await demo.client.get("/metrics")).text
    for kind in ("beam", "greedy"):
        pattern = rf'^w2v_decode_duration_seconds_count{{decoder="{kind}",model="demo"}} (\S+)$'
        found = re.search(pattern, text, re.M)
        assert found and float(found.group(1)) >= 1, kind
