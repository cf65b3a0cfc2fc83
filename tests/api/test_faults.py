"""Overload, faults, keys, CORS, lifespan: one small app each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.app import create_app
from tests.api.helpers import (
    MAX_UPLOAD,
    RATE,
    assert_error,
    riff,
    serve,
    settings_for,
    wav,
)
from tests.checkpoints import speech_like

pytestmark = pytest.mark.asyncio(loop_scope="module")


# ---- overload, faults, keys, CORS, lifespan: one small app each ----


def slowed(
    runtime: Any, seconds: float, fail: Callable[[int], bool] = lambda n: False
) -> list[int]:
    """Make the runtime's batches take `seconds` and raise where fail(batch number); returns
    the sizes of the batches run."""
    original = runtime._batcher.run_batch
    sizes: list[int] = []

    def run(clips):
        sizes.append(len(clips))
        time.sleep(seconds)
        if fail(len(sizes)):
            raise RuntimeError("injected fault")
        return original(clips)

    runtime._batcher.run_batch = run
    return sizes


async def test_overload_answers_429_and_nothing_hangs(checkpoints):
    settings = settings_for(checkpoints, ["asr"], max_queue=2, max_batch_size=1, max_wait_ms=0)
    async with serve(settings) as s:
        slowed(s.runtime("asr"), 0.3)
        body = wav(speech_like(0.5))
        posts = [
            s.client.post("/v1/transcribe", content=body, headers={"content-type": "audio/wav"})
            for _ in range(10)
        ]
        answers = await asyncio.wait_for(asyncio.gather(*posts), 60)
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) == {200, 429}, statuses
        for r in answers:
            if r.status_code == 429:
                assert_error(r, 429, "overloaded")
                assert int(r.headers["retry-after"]) >= 1
        # once the queue has room again, requests succeed
        r = await s.client.post(
            "/v1/transcribe", content=body, headers={"content-type": "audio/wav"}
        )
        assert r.status_code == 200


async def test_a_refused_long_clip_leaves_no_windows_behind(checkpoints):
    """A clip with more windows than the queue holds: 429, and its queued windows are dropped."""
    settings = settings_for(checkpoints, ["asr"], max_queue=2, max_batch_size=1, max_wait_ms=0)
    async with serve(settings) as s:
        sizes = slowed(s.runtime("asr"), 0.3)
        body = wav(speech_like(20.0))
        r = await asyncio.wait_for(
            s.client.post("/v1/transcribe", content=body, headers={"content-type": "audio/wav"}), 30
        )
        assert_error(r, 429, "overloaded")
        await asyncio.sleep(1.0)
        assert sum(sizes) <= 1, sizes  # at most the window that had already started


@pytest.mark.parametrize("path", ["/v1/transcribe", "/v1/audio/transcriptions"])
async def test_an_abandoned_request_is_not_computed(checkpoints, path):
    """The client leaves while its clip waits behind a running batch: it never runs."""
    async with serve(settings_for(checkpoints, ["asr"], max_batch_size=1, max_wait_ms=0)) as s:
        sizes = slowed(s.runtime("asr"), 0.6)
        body = wav(speech_like(0.5))
        first = asyncio.ensure_future(
            s.client.post("/v1/transcribe", content=body, headers={"content-type": "audio/wav"})
        )
        while not sizes:  # the first batch is computing
            await asyncio.sleep(0.01)
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"audio/wav"), (b"content-length", b"%d" % len(body))],
            "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
        }
        second = asyncio.ensure_future(s.app(scope, receive, send))
        await asyncio.sleep(0.2)  # decoded and queued behind the first batch
        gone.set()
        await asyncio.wait_for(second, 5)
        assert (await asyncio.wait_for(first, 10)).status_code == 200
        await asyncio.sleep(0.8)  # the worker is free again: the second clip must not run
        assert sizes == [1], sizes
        assert sent[0]["status"] == 499


async def test_a_failing_batch_fails_only_its_requests(checkpoints):
    async with serve(settings_for(checkpoints, ["asr"], max_wait_ms=0)) as s:
        slowed(s.runtime("asr"), 0.0, fail=lambda n: n == 1)
        body = wav(speech_like(0.5))
        raw = {"content-type": "audio/wav"}
        r = await s.client.post("/v1/transcribe", content=body, headers=raw)
        assert_error(r, 500, "inference_failed")
        assert "x-total-time" in r.headers
        r = await s.client.post("/v1/transcribe", content=body, headers=raw)
        assert r.status_code == 200, r.text
        assert (await s.client.get("/readyz")).status_code == 200


async def test_api_keys_and_cors(checkpoints):
    origin = "https://app.example"
    settings = settings_for(checkpoints, ["cls"], api_keys=["k1", "k2"], cors_origins=[origin])
    async with serve(settings) as s:
        c = s.client
        body = wav(speech_like(0.5))
        for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "k2"}):
            assert_error(await c.get("/v1/models", headers=headers), 401, "unauthorized")
            r = await c.post(
                "/v1/classify", content=body, headers={**headers, "content-type": "audio/wav"}
            )
            assert_error(r, 401, "unauthorized")
        r = await c.post(
            "/v1/classify",
            content=body,
            headers={"authorization": "Bearer k2", "content-type": "audio/wav"},
        )
        assert r.status_code == 200, r.text
        assert (
            await c.get("/v1/models", headers={"authorization": "bearer k1"})
        ).status_code == 200
        for path in ("/healthz", "/readyz"):
            assert (await c.get(path)).status_code == 200
        preflight = {
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        }
        r = await c.options("/v1/classify", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == origin
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = await c.post(
            "/v1/classify",
            content=body,
            headers={"origin": origin, "authorization": "Bearer k1", "content-type": "audio/wav"},
        )
        assert r.headers["access-control-allow-origin"] == origin
        assert "x-total-time" in r.headers["access-control-expose-headers"]
        # the middleware's own refusals carry CORS headers too (CORS is outermost)
        big = bytes(MAX_UPLOAD + 100_000)
        r = await c.post(
            "/v1/classify", content=big, headers={"origin": origin, "content-type": "audio/wav"}
        )
        assert r.status_code == 413 and r.headers["access-control-allow-origin"] == origin
        r = await c.options("/v1/classify", headers={**preflight, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_readiness_follows_the_lifespan(checkpoints):
    app = create_app(settings_for(checkpoints, ["cls"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/readyz")  # models not loaded yet
        assert r.status_code == 503 and r.json()["status"] == "starting"
        assert (await c.get("/healthz")).status_code == 200
        r = await c.post(
            "/v1/classify", content=wav(speech_like(0.5)), headers={"content-type": "audio/wav"}
        )
        assert_error(r, 503, "unavailable")
        assert r.headers["retry-after"]
        async with app.router.lifespan_context(app):
            assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 503


async def test_decoder_refuses_a_wav_with_zero_bits_per_sample():
    """A header PyAV opens without a codec context is refused as undecodable, not a crash."""
    from service.audio import decode_audio
    from service.errors import AudioError

    data = riff(bytes(16_000), RATE, bits=0)
    with pytest.raises(AudioError):
        decode_audio(data, RATE, max_seconds=30, min_samples=400)
