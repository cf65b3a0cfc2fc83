"""POST /v1/align on the embedded demo model: espeak-ng speech synthesised word by word with
known silences, its transcript aligned through the real app (batcher, windows, alignment
threads), every refusal a clear 4xx, and `python -m service predict --task align` agreeing."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

import service
from benchmarks import bench_align
from service import cli
from service.schemas import Options
from tests.api.helpers import RATE, Served, assert_close, assert_error, serve, settings_for, wav
from tests.conftest import require_tool

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEMO = Path(service.__file__).parent / "models" / "demo-ctc"
CHUNK_SECONDS = 6  # small windows: two sentences are long audio
TEXT_LIMIT = 2_000


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(checkpoints) -> AsyncIterator[Served]:
    settings = settings_for(
        checkpoints,
        ["cls"],
        model=[f"demo={DEMO}", f"cls={checkpoints('classify-weighted')}"],
        chunk_seconds=CHUNK_SECONDS,
        stride_seconds=1,
        max_align_text_chars=TEXT_LIMIT,
        align_workers=1,
    )
    async with serve(settings) as s:
        yield s


def _spoken(n: int, seed: int) -> tuple[str, np.ndarray, list[tuple[float, float]]]:
    text, *voice = bench_align.SPOKEN[n]
    samples, bounds = bench_align.spoken_words(text.split(), *voice, seed=seed)
    return text, samples, bounds


@pytest.fixture(scope="module")
def speech() -> dict[str, tuple[str, np.ndarray, list[tuple[float, float]]]]:
    """(text, samples, known (start, end) s per word): one window, and several windows."""
    require_tool("espeak-ng")
    short = _spoken(5, seed=5)  # "the weather is nice today": under CHUNK_SECONDS
    parts = [_spoken(n, seed=n) for n in (0, 6)]
    gap = np.zeros(RATE // 2, np.float32)
    offset = (len(parts[0][1]) + len(gap)) / RATE
    long = (
        f"{parts[0][0]} {parts[1][0]}",
        np.concatenate([parts[0][1], gap, parts[1][1]]),
        parts[0][2] + [(s + offset, e + offset) for s, e in parts[1][2]],
    )
    assert len(short[1]) < CHUNK_SECONDS * RATE < 2 * CHUNK_SECONDS * RATE < len(long[1])
    return {"short": short, "long": long}


async def _align(served: Served, samples: np.ndarray, text: str, **fields: str) -> Any:
    return await served.client.post(
        "/v1/align", files={"file": ("a.wav", wav(samples))}, data={"text": text, **fields}
    )


def _check_words(body: dict, text: str, duration: float) -> None:
    """The invariants of any alignment: words join to the text, times increase inside the
    clip, scores are log-probabilities."""
    words = body["words"]
    assert body["task"] == "align" and body["text"] == text.upper()
    assert " ".join(w["word"] for w in words) == body["text"]
    flat = [t for w in words for t in (w["start"], w["end"])]
    assert flat == sorted(flat) and flat[0] >= 0 and flat[-1] <= duration
    assert all(w["start"] < w["end"] for w in words)
    assert all(w["score"] <= 0 for w in words)


def _boundary_error(words: list[dict], bounds: list[tuple[float, float]]) -> float:
    errors = [
        abs(w[k] - b[i]) for w, b in zip(words, bounds) for i, k in enumerate(("start", "end"))
    ]
    return float(np.mean(errors))


async def test_align_an_espeak_clip(served, speech):
    text, samples, bounds = speech["short"]
    r = await _align(served, samples, text)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "demo" and body["duration"] == pytest.approx(len(samples) / RATE)
    assert "chars" not in body
    _check_words(body, text, body["duration"])
    # bench_align measures 82 ms mean on this model (starts ~110 ms late): a loose bound
    assert _boundary_error(body["words"], bounds) < 0.15
    for header in ("x-queue-time", "x-inference-time", "x-total-time"):
        assert float(r.headers[header]) >= 0


async def test_granularity_and_star(served, speech):
    text, samples, _ = speech["short"]
    word = (await _align(served, samples, text)).json()
    both = (await _align(served, samples, text, granularity="both")).json()
    chars = (await _align(served, samples, text, granularity="char")).json()
    assert "words" not in chars and chars["chars"] == both["chars"]
    assert both["words"] == word["words"]
    for i, w in enumerate(both["words"]):  # a word's characters spell it, inside its span
        own = [c for c in both["chars"] if c["word"] == i]
        assert "".join(c["char"] for c in own) == w["word"]
        assert own[0]["start"] == w["start"] and own[-1]["end"] == w["end"]
        assert all(c["score"] <= 0 for c in own)
    star = await _align(served, samples, text, star="true")
    assert star.status_code == 200, star.text
    _check_words(star.json(), text, star.json()["duration"])
    # A spoken word the text lacks: the star absorbs it, the other words keep their times.
    words = text.split()
    lacking = " ".join(words[:2] + words[3:])
    r = await _align(served, samples, lacking, star="1")
    assert r.status_code == 200 and r.json()["text"] == lacking.upper()


async def test_text_as_a_file_part_and_raw_audio_with_text_in_the_query(served, speech):
    text, samples, _ = speech["short"]
    reference = (await _align(served, samples, text)).json()
    as_file = await served.client.post(
        "/v1/align",
        files={"file": ("a.wav", wav(samples)), "text": ("t.txt", ("\ufeff" + text).encode())},
    )
    raw = await served.client.post(
        "/v1/align",
        content=wav(samples),
        headers={"content-type": "audio/wav"},
        params={"text": text, "model": "demo"},
    )
    for r in (as_file, raw):
        assert r.status_code == 200, r.text
        assert r.json() == reference


async def test_concurrent_requests_share_a_batch_and_match_alone(served, speech):
    """Two clips aligned at once share a forward pass and answer as each alone."""
    model = served.runtime("demo")
    cases = [speech["short"], (speech["short"][0], speech["short"][1][RATE // 10 :], None)]
    sizes: list[int] = []
    original = model._batcher.run_batch

    def recording(clips):
        sizes.append(len(clips))
        time.sleep(0.2)  # the next requests queue up behind this batch
        return original(clips)

    model._batcher.run_batch = recording
    try:
        together = await asyncio.gather(*(_align(served, s, t) for t, s, _ in cases))
        assert max(sizes) > 1, sizes
        sizes.clear()
        alone = [await _align(served, s, t) for t, s, _ in cases]
        assert sizes == [1, 1]
    finally:
        model._batcher.run_batch = original
    for t, a in zip(together, alone):
        assert t.status_code == a.status_code == 200, (t.text, a.text)
        assert_close(t.json(), a.json())


async def test_long_audio_is_windowed_and_stitched(served, speech):
    """Over three windows (of 6 s, 4 s apart): the emissions are the transcription's
    stitched frames, so word times count from the start of the file and stay near the known
    ones in every window."""
    text, samples, bounds = speech["long"]
    r = await _align(served, samples, text, granularity="both")
    assert r.status_code == 200, r.text
    body = r.json()
    _check_words(body, text, body["duration"])
    assert body["words"][-1]["start"] > 2 * CHUNK_SECONDS - 2
    assert _boundary_error(body["words"], bounds) < 0.15
    late = [(w, b) for w, b in zip(body["words"], bounds) if b[0] > CHUNK_SECONDS]
    assert late and _boundary_error(*zip(*late)) < 0.15


async def test_cli_agrees_with_rest(served, speech, tmp_path, capsys):
    text, samples, _ = speech["short"]
    path = tmp_path / "short.wav"
    path.write_bytes(wav(samples))
    flags = ["--model", f"demo={DEMO}", "--chunk-seconds", str(CHUNK_SECONDS)]
    code = cli.main(
        ["predict", "--no-progress", *flags, "--stride-seconds", "1", "--task", "align",
         "--text", text, "--granularity", "both", str(path)]
    )  # fmt: skip
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0 and line.pop("file") == str(path)
    rest = (await _align(served, samples, text, granularity="both")).json()
    assert_close(line, rest)


async def test_viterbi_waiting_for_a_thread_is_dropped_when_the_client_goes(served, speech):
    """A request cancelled while its alignment waits for the (one) alignment thread never
    runs its Viterbi."""
    model = served.runtime("demo")
    text, samples, _ = speech["short"]
    started, release = threading.Event(), threading.Event()

    def occupy() -> None:
        started.set()
        release.wait(30)

    blocker = asyncio.get_running_loop().run_in_executor(model._aligner, occupy)
    await asyncio.to_thread(started.wait, 30)
    ran: list[str] = []
    original = model._timed_alignment

    def counting(*args: Any) -> Any:
        ran.append("viterbi")
        return original(*args)

    model._timed_alignment = counting
    try:
        task = asyncio.ensure_future(model.align(samples, len(samples) / RATE, text, Options()))
        while not model._aligner._work_queue.qsize():  # forward done, Viterbi queued
            assert not task.done()
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)  # the loop passes the cancellation on to the thread pool
        release.set()
        await blocker
        done = await model.align(samples, len(samples) / RATE, text, Options())
        assert ran == ["viterbi"] and done.result.text == text.upper()
    finally:
        del model._timed_alignment


async def test_bad_requests(served, speech):
    text, samples, _ = speech["short"]
    tiny = samples[: RATE // 2]  # 24 frames: (8000 - 400) // 320 + 1
    c = served.client
    cases: list[tuple[Any, int, str]] = [
        (c.post("/v1/align", files={"file": ("a.wav", wav(samples))}), 422, "missing_text"),
        (_align(served, samples, ""), 422, "empty_text"),
        (_align(served, samples, " \n\t "), 422, "empty_text"),
        (_align(served, samples, "| |"), 422, "empty_text"),  # only word delimiters
        (_align(served, samples, "a" * (TEXT_LIMIT + 1)), 413, "text_too_long"),
        (_align(served, tiny, "a" * 30), 422, "alignment_impossible"),
        (_align(served, samples, text, model="cls"), 422, "wrong_task"),
        (_align(served, samples, text, model="nope"), 404, "model_not_found"),
        (_align(served, samples, text, granularity="sentence"), 422, "invalid_field"),
        (_align(served, samples, text, star="maybe"), 422, "invalid_field"),
        (c.post("/v1/align", data={"text": text}), 422, "missing_file"),
        (
            c.post(
                "/v1/align",
                files={"file": ("a.wav", wav(samples)), "text": ("t.txt", b"\xff\xfe\xfa")},
            ),
            422,
            "invalid_field",
        ),
        (_align(served, np.zeros(0, np.float32), text), 400, "empty_audio"),
    ]
    for request, status, code in cases:
        assert_error(await request, status, code)
    r = await _align(served, tiny, "a" * 30)
    message = r.json()["error"]["message"]
    assert "59 frames" in message and "30 tokens" in message and "29 repeated" in message
    assert "has 24" in message
    assert (await c.get("/readyz")).status_code == 200  # still healthy


async def test_openapi_shows_the_endpoint_and_its_errors(served):
    spec = (await served.client.get("/openapi.json")).json()
    post = spec["paths"]["/v1/align"]["post"]
    assert {"200", "400", "404", "413", "415", "422"} <= set(post["responses"])
    body = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "text", "model", "granularity", "star"} <= set(body["properties"])
    assert body["properties"]["granularity"]["enum"] == ["word", "char", "both"]
    assert "score" in spec["components"]["schemas"]["ScoredWord"]["properties"]
    assert "ScoredChar" in spec["components"]["schemas"]
