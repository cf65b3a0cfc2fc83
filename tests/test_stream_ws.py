"""WS /v1/stream against a real uvicorn on 127.0.0.1: concurrency, offline parity, bad clients.

The model is the demo model when service/models/demo-ctc exists, else a tiny random checkpoint
(gibberish, but deterministic): the finals are compared with the offline transcript of the same
model either way, with the word and character error rates printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.app import create_app
from service.settings import Settings
from tests.conftest import require_tool
from training.text import edit_distance

# Every test here streams to a real uvicorn on 127.0.0.1.
pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parent.parent / "service" / "models" / "demo-ctc"
HAVE_DEMO = (DEMO / "config.json").exists()
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "streaming speech recognition works in real time",
    "please call stella and ask her to bring these things",
)


class LiveServer:
    """uvicorn serving create_app(settings) in a thread; .url, .app, .errors (ERROR logs)."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            ws_max_size=settings.stream_max_frame_bytes * 2,  # larger frames: protocol 1009
            ws_max_queue=4,
        )
        self.server = uvicorn.Server(config)
        self.errors: list[logging.LogRecord] = []
        self._handler = logging.Handler(logging.ERROR)
        self._handler.emit = self.errors.append  # type: ignore[method-assign]

    def __enter__(self) -> LiveServer:
        logging.getLogger().addHandler(self._handler)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/v1/stream"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        logging.getLogger().removeHandler(self._handler)

    @property
    def streams(self):
        return self.app.state.streams

    def offline(self, data: bytes) -> dict:
        """The REST Prediction for a file: the offline transcript."""
        response = httpx.post(self.url + "/v1/transcribe", content=data, timeout=60)
        response.raise_for_status()
        return response.json()


def model_spec(checkpoints) -> str:
    return str(DEMO) if HAVE_DEMO else f"tiny={checkpoints('ctc-group')}"


def synthesize(folder: Path, sentences=SENTENCES, gap: float = 0.8) -> np.ndarray:
    """espeak-ng speech at 16 kHz, the sentences apart by `gap` seconds of silence."""
    espeak = require_tool("espeak-ng")
    parts = []
    for i, text in enumerate(sentences):
        path = folder / f"s{i}.wav"
        subprocess.run([espeak, "-w", str(path), text], check=True, capture_output=True)
        x, rate = sf.read(path, dtype="float32")
        parts += [soxr.resample(x, rate, 16_000), np.zeros(int(gap * 16_000), np.float32)]
    return np.concatenate([np.zeros(8000, np.float32), *parts])


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


async def run_stream(url, chunks, start=None, pace=0.0, stop=True):
    """Send start (if any), the chunks (text or bytes), stop; all messages and the close code."""
    messages: list[dict] = []
    async with connect(url, max_size=None) as ws:

        async def read() -> None:
            with contextlib.suppress(ConnectionClosed):  # closes other than 1000 raise
                async for raw in ws:
                    messages.append(json.loads(raw))

        reader = asyncio.create_task(read())
        with contextlib.suppress(Exception):  # the server may close first: that is the test
            if start is not None:
                await ws.send(json.dumps(start))
            for chunk in chunks:
                await ws.send(chunk)
                if pace:
                    await asyncio.sleep(pace)
            if stop:
                await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(reader, 60)
    return messages, ws.close_code


def edit_rate(ref: list, hyp: list) -> float:
    """Levenshtein distance / len(ref)."""
    return edit_distance(ref, hyp) / max(1, len(ref))


def finals_of(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "final"]


def check_words(finals: list[dict], duration: float) -> None:
    words = [w for m in finals for w in m["words"]]
    for a, b in zip(words, words[1:]):
        assert a["end"] <= b["start"] or a["start"] < b["start"], (a, b)
    assert all(0 <= w["start"] < w["end"] <= duration + 1e-6 for w in words)


@pytest.fixture(scope="module")
def server(checkpoints):
    settings = Settings(
        model=[model_spec(checkpoints)],
        device="cpu",
        max_streams=4,
        stream_idle_timeout=1.5,
        stream_max_frame_bytes=256 * 1024,
    )
    with LiveServer(settings) as live:
        yield live


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    return synthesize(tmp_path_factory.mktemp("speech"))


def wav_bytes(x: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_concurrent_streams_get_finals_that_match_offline(server, speech):
    x48 = soxr.resample(speech, 16_000, 48_000).astype(np.float32)
    raw16, raw48 = pcm16(speech), x48.astype("<f4").tobytes()
    fast16 = [raw16[i : i + 3333] for i in range(0, len(raw16), 3333)]  # splits samples
    fast48 = [raw48[i : i + 8191] for i in range(0, len(raw48), 8191)]
    live16 = [raw16[i : i + 3200] for i in range(0, len(raw16), 3200)]  # 100 ms each
    start48 = {"type": "start", "sample_rate": 48_000, "encoding": "pcm_f32le"}

    async def all_streams():
        return await asyncio.gather(
            run_stream(server.ws_url, fast16),  # no start frame: 16 kHz pcm_s16le
            run_stream(server.ws_url, fast48, start=start48),
            run_stream(server.ws_url, live16, start={"type": "start"}, pace=0.1),
        )

    results = asyncio.run(all_streams())
    references = [
        server.offline(wav_bytes(speech, 16_000)),
        server.offline(wav_bytes(x48, 48_000, "FLOAT")),
    ]
    duration = len(speech) / 16_000
    for (messages, code), ref in zip(results, [references[0], references[1], references[0]]):
        assert code == 1000 and messages[0]["type"] == "ready" and messages[-1]["type"] == "end", (
            messages[-1]
        )
        assert messages[-1]["duration"] == pytest.approx(duration, abs=1e-3)
        finals = finals_of(messages)
        assert finals, messages
        check_words(finals, duration)
        text = " ".join(m["text"] for m in finals)
        wer = edit_rate(ref["text"].split(), text.split())
        cer = edit_rate(list(ref["text"]), list(text))
        print(
            f"\nfinals vs offline ({'demo' if HAVE_DEMO else 'tiny'}): WER {wer:.3f} CER {cer:.3f}"
        )
        print(f"  offline: {ref['text']!r}\n  finals:  {text!r}")
        # Windows see less context than the whole clip, so a model whose output depends on
        # context (every real one) disagrees a little. Judged by CER: the tiny random model's
        # "words" are long gibberish. Measured: tiny 0.16, demo-ctc round 1 (CER 78%) 0.14;
        # tighten to WER once the demo model is good (tests/test_streaming.py proves the
        # stitching itself exact with a context-free model).
        assert cer <= 0.3
    assert server.streams.active == 0


def test_a_client_blasting_60_s_is_served_with_bounded_memory(server, speech):
    x = np.resize(speech, 60 * 16_000)
    raw = pcm16(x)
    frame = 256 * 1024  # the largest frame this server accepts: 8 s of audio
    server.streams.peak_pending_samples = 0
    messages, code = asyncio.run(
        run_stream(server.ws_url, [raw[i : i + frame] for i in range(0, len(raw), frame)])
    )
    assert code == 1000 and messages[-1]["type"] == "end"
    finals = finals_of(messages)
    assert finals and finals[-1]["end"] > 55
    check_words(finals, 60.0)
    settings = server.app.state.settings
    window = (
        settings.stream_chunk_seconds
        + settings.stream_lookahead_seconds
        + settings.stream_pause_seconds
    )
    bound = frame // 2 + window * 16_000  # one frame plus one window's new audio
    peak = server.streams.peak_pending_samples
    print(f"\npeak unprocessed audio {peak / 16_000:.2f} s (bound {bound / 16_000:.2f} s)")
    assert 0 < peak <= bound
    assert server.streams.active == 0


AUDIO = pcm16(np.sin(np.arange(16_000) / 5).astype(np.float32) * 0.3)


@pytest.mark.parametrize(
    "name, start, chunks, stop, code, error",
    [
        ("bad json", None, ["{nope"], True, 1008, "invalid_json"),
        ("unknown type", None, ['{"type": "hello"}'], True, 1008, "invalid_message"),
        ("binary before start", None, [AUDIO, '{"type": "start"}'], True, 1008, "unexpected_start"),
        ("second start", {"type": "start"}, ['{"type": "start"}'], True, 1008, "unexpected_start"),
        (
            "wrong encoding",
            {"type": "start", "encoding": "opus"},
            [],
            True,
            1008,
            "invalid_encoding",
        ),
        (
            "bad rate",
            {"type": "start", "sample_rate": "fast"},
            [],
            True,
            1008,
            "invalid_sample_rate",
        ),
        ("unknown model", {"type": "start", "model": "nope"}, [], True, 1008, "model_not_found"),
        (
            "nan audio",
            {"type": "start", "encoding": "pcm_f32le"},
            [np.full(8, np.nan, "<f4").tobytes()],
            True,
            1008,
            "non_finite_audio",
        ),
        ("huge frame", None, [bytes(256 * 1024 + 2)], True, 1009, "frame_too_large"),
        ("never stops", None, [AUDIO], False, 1008, "idle_timeout"),
        ("stop first", None, [], True, 1000, None),
    ],
)
def test_malformed_clients_end_cleanly(server, name, start, chunks, stop, code, error):
    messages, closed = asyncio.run(run_stream(server.ws_url, chunks, start=start, stop=stop))
    assert closed == code, messages
    if error is None:
        assert messages[-1]["type"] == "end"
    else:
        assert messages[-1]["type"] == "error" and messages[-1]["code"] == error, messages
    deadline = time.monotonic() + 5
    while server.streams.active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.streams.active == 0
    assert not server.errors, [r.getMessage() for r in server.errors]


def test_abrupt_close_and_too_many_streams(server, speech):
    raw = pcm16(speech)

    async def scenario():
        # Four streams that stop sending mid-stream, then a fifth over the limit of four.
        held = [await connect(server.ws_url) for _ in range(4)]
        for ws in held:
            await ws.send(raw[:64_000])
        await asyncio.sleep(0.2)
        refused = await run_stream(server.ws_url, [raw[:3200]])
        for ws in held:  # gone without stop or a close frame: the TCP connection just ends
            ws.transport.abort()
        return refused

    (messages, code) = asyncio.run(scenario())
    assert code == 1013 and messages[-1]["code"] == "too_many_streams"
    deadline = time.monotonic() + 10
    while server.streams.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.streams.active == 0
    assert not server.errors, [r.getMessage() for r in server.errors]
    metrics = httpx.get(server.url + "/metrics").text
    assert "w2v_active_streams 0.0" in metrics
    assert 'w2v_stream_emit_latency_seconds_count{kind="final"}' in metrics


def test_api_keys_guard_the_stream(checkpoints, speech):
    """Bearer header or ?api_key= (browsers cannot set WebSocket headers); else 1008."""
    settings = Settings(model=[model_spec(checkpoints)], device="cpu", api_keys=["k1", "k2"])
    audio = [pcm16(speech[:16_000])]
    with LiveServer(settings) as live:
        denied, code = asyncio.run(run_stream(live.ws_url, audio))
        assert (denied[-1]["type"], denied[-1]["code"], code) == ("error", "unauthorized", 1008)
        allowed, code = asyncio.run(run_stream(live.ws_url + "?api_key=k2", audio))
        assert (allowed[0]["type"], allowed[-1]["type"], code) == ("ready", "end", 1000)
