"""SIGTERM past the drain timeout, and slow or vanishing clients, on a real server process."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port, wait_ready
from tests.test_server import SLOW_SERVICE, drained_stream, wav_bytes

# Real server processes.
pytestmark = pytest.mark.slow

BATCH_DELAY = 4.0  # every forward pass takes this long: requests outlive the drain timeout
DRAIN_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
HEADER_TIMEOUT = 1.5


class Server:
    def __init__(self, model, tmp_path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "server.log"
        args = [
            "serve",
            "--model",
            f"asr={model}",
            "--port",
            str(self.port),
            "--device",
            "cpu",
            "--max-batch-size",
            "1",
            "--drain-timeout",
            str(DRAIN_TIMEOUT),
            "--body-timeout",
            str(BODY_TIMEOUT),
            "--header-timeout",
            str(HEADER_TIMEOUT),
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", SLOW_SERVICE, str(BATCH_DELAY), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def metric(self, line_prefix: str) -> float:
        text = httpx.get(self.base + "/metrics").text
        return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(line_prefix))


@pytest.fixture
def server(checkpoints, tmp_path) -> Iterator[Server]:
    s = Server(checkpoints("ctc-group"), tmp_path)
    try:
        wait_ready(s.base, s.proc, s.log, 120)
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


async def test_requests_past_the_drain_timeout_get_json_503_and_the_process_exits_0(server):
    raw = {"content-type": "audio/wav"}
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
        posts = [
            asyncio.create_task(
                client.post("/v1/transcribe", content=wav_bytes(1.0, i), headers=raw)
            )
            for i in range(3)
        ]
        while server.metric("w2v_inflight_audio_seconds{") < 2.99:
            await asyncio.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*posts)
    assert all(a.status_code == 503 for a in answers), [a.text for a in answers]
    for a in answers:
        assert a.headers["content-type"] == "application/json"
        assert a.json()["error"]["code"] == "unavailable"
        assert int(a.headers["retry-after"]) >= 1
    code = await asyncio.to_thread(server.proc.wait, 30)
    log = server.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log and "Internal Server Error" not in log, log


async def test_a_stream_computing_past_the_drain_timeout_gets_its_finals_then_1012(server):
    """The stream's next window is still in the model when the drain times out: the finals of
    every frame computed so far come before server_draining and close 1012, exit 0."""
    import json

    import numpy as np
    from websockets.asyncio.client import connect

    from tests.checkpoints import speech_like

    pcm = (speech_like(3.0) * 32767).astype(np.int16).tobytes()
    first = 2 * 16_000 * 2  # 2 s: one window (1 s chunk + 0.5 s lookahead) can run
    finished = 'w2v_inference_duration_seconds_count{model="asr"}'
    async with connect(f"ws://127.0.0.1:{server.port}/v1/stream") as ws:
        await ws.send(json.dumps({"type": "start"}))
        await ws.send(pcm[:first])
        while server.metric(finished) < 1:  # the first window has been computed
            await asyncio.sleep(0.05)
        await ws.send(pcm[first:])  # the next window takes BATCH_DELAY: past the drain
        while server.metric('w2v_batch_size_count{model="asr"}') < 2:
            await asyncio.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        messages = await drained_stream(ws)
    assert messages[0]["type"] == "ready"
    finals = [m for m in messages if m["type"] == "final"]
    # The first window's chunk (1 s) and its lookahead (0.5 s): no more was computed.
    assert finals and finals[-1]["end"] == pytest.approx(1.5, abs=0.05), finals
    assert "first 1.50 s" in messages[-1]["message"]
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
    log = server.log.read_text()
    assert "Traceback" not in log, log


def test_a_client_that_vanishes_mid_upload_is_499_without_an_error_log(server):
    body = wav_bytes(1.0)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = (
            f"POST /v1/transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while server.metric('w2v_requests_total{endpoint="/v1/transcribe",status="499"}') < 1:
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.1)
    log = server.log.read_text()
    assert "ERROR" not in log and "Traceback" not in log, log
    assert server.metric('w2v_requests_total{endpoint="/v1/transcribe",status="500"}') == 0


def test_a_stalled_body_is_cut_off_with_408(server):
    body = wav_bytes(1.0)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = (
            f"POST /v1/transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[:1000])
        sock.settimeout(BODY_TIMEOUT + 10)
        started = time.monotonic()
        answer = sock.recv(4096).decode()
        elapsed = time.monotonic() - started
        # Headers and body may come in separate segments: read until the server closes.
        while chunk := sock.recv(4096):
            answer += chunk.decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"request_timeout"' in answer
    assert BODY_TIMEOUT - 0.1 < elapsed < BODY_TIMEOUT + 5


def test_a_slow_but_steady_upload_is_not_cut_off(server):
    """Pauses shorter than the body timeout, however long the whole upload takes."""
    body = wav_bytes(0.5)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = (
            f"POST /v1/transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.sendall(head)
        step = len(body) // 4 + 1
        for i in range(0, len(body), step):
            time.sleep(BODY_TIMEOUT * 0.6)
            sock.sendall(body[i : i + step])
        sock.settimeout(60)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


@pytest.mark.parametrize("sent", [b"", b"POST /v1/transcribe HTTP/1.1\r\nHost: x\r\nCont"])
def test_idle_and_partial_header_sockets_are_closed(server, sent):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(sent)
        sock.settimeout(HEADER_TIMEOUT + 10)
        started = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the server, no answer
    assert HEADER_TIMEOUT - 0.1 < time.monotonic() - started < HEADER_TIMEOUT + 5


def test_a_keep_alive_connection_serves_after_the_header_timeout(server):
    """The header timer restarts with each request: a connection is not cut off mid-use."""
    with httpx.Client(base_url=server.base) as client:
        for _ in range(2):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEADER_TIMEOUT * 0.7)


async def test_401_names_the_bearer_scheme(checkpoints):
    from tests.api.helpers import serve, settings_for

    async with serve(settings_for(checkpoints, ["cls"], api_keys=["k1"])) as s:
        for headers in ({}, {"authorization": "Bearer nope"}):
            r = await s.client.get("/v1/models", headers=headers)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await s.client.get("/v1/models", headers={"authorization": "Bearer k1"})).is_success
