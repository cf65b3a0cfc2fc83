"""The stream state machine (service/streaming.py) with a fake, context-free model.

The fake model's frame j is a function of the samples under frame j alone, so chunked
inference must give exactly the whole clip's frames: any difference between the joined finals
and the offline decode is a stitching, alignment or segmentation bug, not the model.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from service.streaming import Stream, Windowing
from service.wav2vec2.tokenizer import CTCTokenizer
from tests.checkpoints import VOCAB

STEP, FIELD, FRAME_S = 320, 400, 0.02
PAD, DELIM = VOCAB["<pad>"], VOCAB["|"]
LETTERS = [i for t, i in VOCAB.items() if len(t) == 1 and t.isalpha()]
TOKENIZER = CTCTokenizer(VOCAB)


def frames_in(n: int) -> int:
    return (n - FIELD) // STEP + 1


def fake_logits(x: np.ndarray) -> np.ndarray:
    """Frame j's token is coded in the samples at the middle of frame j."""
    n = max(0, frames_in(len(x)))
    tokens = np.rint(x[np.arange(n) * STEP + STEP // 2] * 64).astype(int)
    logits = np.zeros((n, len(VOCAB)), np.float32)
    logits[np.arange(n), tokens] = 10.0
    return logits


def speech(rng: random.Random, seconds: float) -> np.ndarray:
    """Frame tokens: words of letters, delimiters between words, now and then a pause."""
    tokens: list[int] = [PAD] * rng.randint(0, 60)
    while len(tokens) < seconds / FRAME_S:
        for _ in range(rng.randint(1, 6)):
            tokens += [rng.choice(LETTERS)] * rng.randint(1, 3) + [PAD] * rng.randint(0, 3)
        tokens += [DELIM] * rng.randint(1, 2)
        if rng.random() < 0.3:
            tokens += [PAD] * rng.randint(20, 80)
    return np.array(tokens)


def audio_of(tokens: np.ndarray) -> np.ndarray:
    x = np.repeat(tokens.astype(np.float32) / 64, STEP)
    return np.concatenate([x, np.zeros(FIELD - STEP, np.float32)])  # exactly len(tokens) frames


def windowing(**kw: int) -> Windowing:
    geometry = dict(chunk=50, left=100, lookahead=25, pause=25, max_segment=500, parallel=4)
    geometry.update(kw)
    return Windowing(step=STEP, min_samples=FIELD, **geometry)


def make_stream(w: Windowing, calls: list[int] | None = None, **kw) -> Stream:
    async def infer(x: np.ndarray, start: int) -> np.ndarray:
        assert start % w.step == 0, "windows start on frame boundaries"
        if calls is not None:
            calls.append(len(x))
        await asyncio.sleep(0)
        return fake_logits(x)

    return Stream(w, TOKENIZER, FRAME_S, infer, **kw)


async def run(stream: Stream, x: np.ndarray, pieces: list[int]) -> list[dict]:
    out, pos = [], 0
    for n in pieces:
        stream.feed(x[pos : pos + n])
        pos += n
        out += [m.model_dump() for m in await stream.advance()]
    stream.feed(x[pos:])
    return out + [m.model_dump() for m in await stream.finish()]


def random_pieces(rng: random.Random, total: int, biggest: int) -> list[int]:
    pieces = []
    while sum(pieces) < total:
        pieces.append(rng.randint(1, biggest))
    return pieces


def offline(x: np.ndarray):
    return TOKENIZER.decode(fake_logits(x).argmax(-1).tolist())


def check_finals(messages: list[dict], x: np.ndarray) -> None:
    finals = [m for m in messages if m["type"] == "final"]
    whole = offline(x)
    joined = " ".join(m["text"] for m in finals)
    assert " ".join(joined.split()) == " ".join(whole.text.split())
    words = [(w["word"], w["start"], w["end"]) for m in finals for w in m["words"]]
    expected = [
        (w.word, round(w.start * FRAME_S, 3), round(w.end * FRAME_S, 3)) for w in whole.words
    ]
    assert words == expected
    last = 0.0
    for m in finals:  # segments follow one another; their words lie inside them
        assert last <= m["start"] <= m["end"]
        assert all(m["start"] <= w["start"] < w["end"] <= m["end"] for w in m["words"])
        assert "".join(w["word"] for w in m["words"]) == m["text"].replace(" ", "")
        last = m["end"]
    assert last <= len(x) / 16_000


@pytest.mark.parametrize("seed", range(6))
async def test_finals_equal_offline_for_any_geometry_and_frame_sizes(seed):
    rng = random.Random(seed)
    x = audio_of(speech(rng, rng.uniform(3, 25)))
    w = windowing(
        chunk=rng.randint(1, 80),
        left=rng.randint(0, 120),
        lookahead=rng.randint(0, 40),
        pause=rng.randint(6, 40),
        max_segment=rng.randint(150, 600),
        parallel=rng.randint(1, 5),
    )
    calls: list[int] = []
    messages = await run(make_stream(w, calls), x, random_pieces(rng, len(x), 9000))
    check_finals(messages, x)
    # Windows never hold more than [left | chunk | lookahead].
    assert max(calls) <= w.samples_for(w.left + w.chunk + w.lookahead)


async def test_long_speech_without_pauses_is_cut_at_word_boundaries():
    rng = random.Random(7)
    tokens = []
    while len(tokens) < 2500:  # 50 s, no pause anywhere
        tokens += [rng.choice(LETTERS), PAD] * 3 + [DELIM]
    x = audio_of(np.array(tokens))
    messages = await run(make_stream(windowing(max_segment=250)), x, [16_000] * 50)
    finals = [m for m in messages if m["type"] == "final"]
    assert len(finals) >= 10
    assert all(m["end"] - m["start"] <= 250 * FRAME_S + 1e-9 for m in finals)
    check_finals(messages, x)


async def test_partials_carry_the_tentative_tail_and_finals_never_repeat():
    rng = random.Random(3)
    x = audio_of(speech(rng, 12))
    messages = await run(make_stream(windowing()), x, [1600] * (len(x) // 1600))
    partials = [m for m in messages if m["type"] == "partial"]
    assert partials and all(isinstance(m["text"], str) and m["start"] >= 0 for m in partials)
    check_finals(messages, x)
    # Without interim results only finals are sent.
    quiet = await run(make_stream(windowing(), interim=False), x, [1600] * (len(x) // 1600))
    assert {m["type"] for m in quiet} <= {"final"}


async def test_a_fast_client_is_read_no_faster_than_the_windows_run():
    x = audio_of(np.array([LETTERS[0], DELIM] * 1500))  # 60 s
    stream = make_stream(windowing())
    frame = 64_000  # 4 s per message
    await run(stream, x, [frame] * (len(x) // frame))
    w = stream.w
    assert stream.peak_pending <= frame + w.samples_for(w.chunk + w.lookahead)
    assert stream.done == frames_in(len(x))


async def test_silence_and_tiny_streams_give_no_finals():
    assert await run(make_stream(windowing()), np.zeros(48_000, np.float32), [999] * 40) == []
    assert await make_stream(windowing()).finish() == []
    assert await run(make_stream(windowing()), np.zeros(100, np.float32), []) == []


@pytest.mark.parametrize("seed", range(3))
async def test_decode_final_gets_each_segments_own_logits(seed):
    """With decode_final (the beam), each final is decoded from exactly its frames' logits."""
    rng = random.Random(seed)
    x = audio_of(speech(rng, rng.uniform(5, 20)))
    seen: list[np.ndarray] = []

    async def decode_final(logits: np.ndarray):
        seen.append(logits)
        return TOKENIZER.decode(logits.argmax(-1).tolist())

    w = windowing(chunk=rng.randint(5, 60), lookahead=rng.randint(0, 30))
    stream = make_stream(w, decode_final=decode_final)
    messages = await run(stream, x, random_pieces(rng, len(x), 9000))
    check_finals(messages, x)  # decoded from the logits, the greedy text is unchanged
    whole = fake_logits(x)
    finals = [m for m in messages if m["type"] == "final"]
    by_start = {
        round(len(np.concatenate(seen[:i] or [whole[:0]])) * FRAME_S, 3): s
        for i, s in enumerate(seen)
    }
    for m in finals:
        logits = by_start[m["start"]]
        first = round(m["start"] / FRAME_S)
        assert np.array_equal(logits, whole[first : first + len(logits)])
        assert round(m["end"] / FRAME_S) == first + len(logits)


async def test_decode_final_text_is_what_the_finals_say():
    x = audio_of(speech(random.Random(7), 6))

    async def shout(logits: np.ndarray):
        decoded = TOKENIZER.decode(logits.argmax(-1).tolist())
        return type(decoded)(decoded.text.upper() + "!", decoded.words)

    messages = await run(make_stream(windowing(), decode_final=shout), x, [4000] * 30)
    finals = [m for m in messages if m["type"] == "final"]
    assert finals and all(m["text"].endswith("!") for m in finals)
    partials = [m for m in messages if m["type"] == "partial"]
    assert not any(m["text"].endswith("!") for m in partials)  # partials stay greedy


def joined(messages: list) -> str:
    return " ".join(" ".join(m.text for m in messages if m.type == "final").split())


@pytest.mark.parametrize("seed", range(4))
async def test_cut_short_mid_step_gives_finals_for_every_computed_frame(seed):
    """A drain past its timeout cancels a step while its forward pass waits; the finals sent
    before and those of cut_short are the offline transcript of the frames computed."""
    rng = random.Random(seed)
    x = audio_of(speech(rng, 12))
    gate = asyncio.Event()  # never set: the model stops answering after `answered` windows
    answered = rng.randint(2, 8)
    calls: list[int] = []

    async def infer(window: np.ndarray, start: int) -> np.ndarray:
        calls.append(len(window))
        if len(calls) > answered:
            await gate.wait()
        return fake_logits(window)

    stream = Stream(windowing(parallel=1), TOKENIZER, FRAME_S, infer)
    sent, pos = [], 0
    step = asyncio.ensure_future(asyncio.sleep(0))
    while step.done() or len(calls) <= answered:  # until a window waits on the model
        if step.done():
            assert pos <= len(x), "the stream ended before the model stopped answering"
            sent += step.result() or []
            stream.feed(x[pos : pos + 8000])
            pos += 8000
            step = asyncio.ensure_future(stream.advance() if pos < len(x) else stream.finish())
        await asyncio.sleep(0)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    cut = stream.cut_short()
    frames = round(stream.covered_seconds / FRAME_S)
    assert stream.done < frames <= stream.done + windowing().lookahead  # the tail is in
    ids = fake_logits(x)[:frames].argmax(-1).tolist()
    assert joined([*sent, *cut]) == " ".join(TOKENIZER.decode(ids).text.split())
    assert all(m.end <= stream.covered_seconds for m in cut)


async def test_cut_short_while_finals_are_decoded_keeps_their_segments():
    """Cancelled while a beam search runs, no closed segment is lost: cut_short decodes them
    greedily."""
    x = audio_of(speech(random.Random(7), 15))
    started = asyncio.Event()

    async def decode_final(logits: np.ndarray):
        started.set()
        await asyncio.Event().wait()  # a beam search that does not end in time

    stream = make_stream(windowing(), decode_final=decode_final)
    stream.feed(x)
    step = asyncio.ensure_future(stream.finish())
    await started.wait()
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert joined(stream.cut_short()) == " ".join(offline(x).text.split())
