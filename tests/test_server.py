"""The real server process: `python -m service serve` on 127.0.0.1, SIGTERM and the drain."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from tests.checkpoints import speech_like
from tests.conftest import free_port, wait_ready

# Every test here starts `python -m service serve` and signals it.
pytestmark = pytest.mark.slow

# `python -m service ...` with every forward pass slowed by BATCH_DELAY seconds, so requests
# are reliably in flight when the signal arrives (a tiny model answers in milliseconds).
SLOW_SERVICE = """
import runpy, sys, time
from service.engine import Engine
delay = float(sys.argv.pop(1))
run_batch = Engine.run_batch
def slow(self, *args):
    time.sleep(delay)
    return run_batch(self, *args)
Engine.run_batch = slow
runpy.run_module("service", run_name="__main__", alter_sys=True)
"""
BATCH_DELAY = 0.8
DRAIN_TIMEOUT = 30
STARTUP_TIMEOUT = 120


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, speech_like(seconds, seed=seed), 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class Server:
    def __init__(self, model: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_file = log.open("wb")
        self.log = log
        args = ["serve", "--model", f"asr={model}", "--port", str(self.port), "--device", "cpu"]
        args += ["--max-batch-size", "1", "--drain-timeout", str(DRAIN_TIMEOUT)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_SERVICE, str(BATCH_DELAY), *args],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        wait_ready(self.base, self.proc, self.log, STARTUP_TIMEOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


@pytest.fixture
def server(checkpoints, tmp_path) -> Iterator[Server]:
    s = Server(checkpoints("ctc-group"), tmp_path / "server.log")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


async def _inflight_seconds(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    lines = [ln for ln in text.splitlines() if ln.startswith("w2v_inflight_audio_seconds{")]
    return sum(float(ln.split()[-1]) for ln in lines)


async def test_sigterm_drains_accepted_requests_then_exits_0(server):
    n, seconds = 4, 2.0
    raw = {"content-type": "audio/wav"}
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
        posts = [
            asyncio.create_task(
                client.post("/v1/transcribe", content=wav_bytes(seconds, i), headers=raw)
            )
            for i in range(n)
        ]
        # Signal only once every request is in the batcher: all of them were accepted.
        deadline = time.monotonic() + 30
        while await _inflight_seconds(client) < n * seconds - 0.01:
            assert time.monotonic() < deadline, "the requests never reached the batcher"
            await asyncio.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # Signals arrive asynchronously: allow the process a moment to take it.
        while (r := await client.get("/readyz")).status_code == 200:
            assert time.monotonic() - signalled < 1.0, "/readyz still 200 a second after SIGTERM"
            await asyncio.sleep(0.01)
        assert r.status_code == 503 and r.json()["status"] == "draining"
        r = await client.post("/v1/transcribe", content=wav_bytes(1.0), headers=raw)
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        assert r.headers["retry-after"]
        assert (await client.get("/healthz")).status_code == 200  # alive while draining
        assert not all(p.done() for p in posts), "nothing was in flight at the signal"

        answers = await asyncio.wait_for(asyncio.gather(*posts), DRAIN_TIMEOUT)
        assert [a.status_code for a in answers] == [200] * n, [a.text for a in answers]
        assert all(a.json()["duration"] == pytest.approx(seconds) for a in answers)
    code = await asyncio.to_thread(server.proc.wait, DRAIN_TIMEOUT)
    assert code == 0, server.log.read_text()
    assert time.monotonic() - signalled < DRAIN_TIMEOUT
    assert "drained" in server.log.read_text()


async def _metric(client: httpx.AsyncClient, prefix: str) -> float:
    text = (await client.get("/metrics")).text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(prefix))


async def test_abandoned_request_is_skipped_then_idle_sigterm_exits_0(server):
    """A client that hangs up while queued costs no forward pass; then, with nothing in
    flight, SIGTERM ends the process at once with status 0."""
    raw = {"content-type": "audio/wav"}
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
        first = asyncio.create_task(
            client.post("/v1/transcribe", content=wav_bytes(1.0), headers=raw)
        )
        while await _inflight_seconds(client) < 0.99:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=server.base, timeout=0.3) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post("/v1/transcribe", content=wav_bytes(1.5, 1), headers=raw)
        assert (await first).status_code == 200
        await asyncio.sleep(2 * BATCH_DELAY)  # time for a second batch, if one were run
        assert await _metric(client, 'w2v_batch_size_count{model="asr"}') == 1
        assert (
            await _metric(client, 'w2v_requests_total{endpoint="/v1/transcribe",status="499"}') == 1
        )

    server.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = await asyncio.to_thread(server.proc.wait, 15)
    assert code == 0, server.log.read_text()
    assert time.monotonic() - started < 10


async def drained_stream(ws) -> list[dict]:
    """The messages a stream gets until the server closes it; they end in server_draining,
    and the close code is 1012."""
    import json

    from websockets.exceptions import ConnectionClosed

    messages = []
    try:
        async for raw in ws:
            messages.append(json.loads(raw))
    except ConnectionClosed:
        pass
    assert messages and messages[-1]["type"] == "error", messages
    assert messages[-1]["code"] == "server_draining" and ws.close_code == 1012, messages[-1]
    return messages


async def test_sigterm_ends_open_streams_with_their_finals(server):
    """An open WebSocket stream does not hold the drain: it gets the finals of the audio it
    sent, then server_draining and close 1012, and the process exits 0 well before the
    drain timeout."""
    import json

    import numpy as np
    from websockets.asyncio.client import connect

    audio = (speech_like(2.0) * 32767).astype(np.int16).tobytes()
    messages = []
    async with connect(f"ws://127.0.0.1:{server.port}/v1/stream") as ws:
        await ws.send(json.dumps({"type": "start"}))
        await ws.send(audio)
        messages.append(json.loads(await ws.recv()))  # ready
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        messages += await drained_stream(ws)
    assert messages[0]["type"] == "ready"
    finals = [m for m in messages if m["type"] == "final"]
    assert finals and finals[-1]["end"] <= 2.0 + 1e-6
    assert await asyncio.to_thread(server.proc.wait, DRAIN_TIMEOUT) == 0
    assert time.monotonic() - signalled < DRAIN_TIMEOUT / 2
