"""WebSocket /v1/stream: streaming transcription (CONTRACT.md, "Streaming transcription").

Protocol decisions the contract leaves open:
- The start frame is optional: binary audio as the first frame is 16 kHz pcm_s16le with the
  first transcription model, and `ready` is sent before that audio is processed. A start frame
  after audio, or a second start, is a protocol error (`unexpected_start`).
- A `stop` as the first frame ends an empty stream: `end`, close 1000.
- Errors: an `error` message, then close 1008 (bad JSON, unknown message, bad start field,
  wrong encoding, non-finite samples, unknown model, no API key, idle timeout), 1009 (a frame
  over stream_max_frame_bytes), 1013 (too many streams, not ready or draining, queue full),
  1011 (the server's own fault, logged). A client that just goes away is not an error.
- Idle timeout (no frame for stream_idle_timeout s): the finals of the audio received so far
  are sent, then `error` code idle_timeout, then close 1008.
- Drain (SIGTERM): an open stream gets the finals of all audio received, then `error` code
  server_draining and close 1012 (service restart), so the client reconnects to another pod
  instead of holding the drain until its timeout.
- Back-pressure: the next frame is read only after every full chunk has run, so a client that
  sends faster than the model keeps up waits in TCP, and a stream holds at most one frame plus
  one window of unprocessed audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any, NoReturn

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

from service import metrics
from service.batcher import STREAM_PRIORITY
from service.errors import ServiceError
from service.routes.deps import bearer_token, key_is_valid
from service.runtime import ModelRuntime
from service.settings import Settings
from service.streaming import (
    INTERNAL,
    NORMAL,
    RESTART,
    TOO_BIG,
    TRY_LATER,
    PcmDecoder,
    StartRequest,
    Stream,
    StreamError,
    parse_control,
    parse_start,
    windowing_for,
)

router = APIRouter(tags=["streaming"])
log = logging.getLogger(__name__)
MAX_TEXT_BYTES = 64 * 1024


@dataclass
class StreamStats:
    """Per-app stream accounting (app.state.streams); tests read it."""

    active: int = 0
    peak_pending_samples: int = 0  # the most unprocessed audio any stream held


def stream_stats(state: Any) -> StreamStats:
    if not hasattr(state, "streams"):
        state.streams = StreamStats()
    return state.streams


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    """Streaming transcription: start, binary PCM, stop -> ready, partials, finals, end."""
    state = websocket.app.state
    settings: Settings = state.settings
    stats = stream_stats(state)
    await websocket.accept()
    try:
        _admit(websocket, settings, stats)
    except StreamError as exc:
        await _fail(websocket, exc)
        return
    stats.active += 1
    metrics.ACTIVE_STREAMS.inc()
    state.lifecycle.enter()
    try:
        await _Session(websocket, settings, state.runtimes, stats).run()
    except StreamError as exc:
        await _fail(websocket, exc)
    except ServiceError as exc:  # from the batcher: full queue, shutting down, failed batch
        if exc.status >= 500 and exc.status != 503:
            log.error("stream failed: %s: %s", exc.code, exc.message)
        code = TRY_LATER if exc.status in (429, 503) else INTERNAL
        await _fail(websocket, StreamError(exc.code, exc.message, code))
    except WebSocketDisconnect:
        pass  # the client went away; nothing to tell it
    except Exception:
        log.exception("stream failed")
        await _fail(websocket, StreamError("internal_error", "internal server error", INTERNAL))
    finally:
        stats.active -= 1
        metrics.ACTIVE_STREAMS.dec()
        state.lifecycle.leave()


def _admit(websocket: WebSocket, settings: Settings, stats: StreamStats) -> None:
    if settings.api_keys:  # browsers cannot set headers on a WebSocket: ?api_key= also works
        given = bearer_token(websocket.headers.get("authorization", ""))
        if not key_is_valid(given or websocket.query_params.get("api_key", ""), settings.api_keys):
            raise StreamError("unauthorized", "a valid API key is required")
    if not websocket.app.state.lifecycle.accepting:
        raise StreamError("unavailable", "the server is not ready or is draining", TRY_LATER)
    if stats.active >= settings.max_streams:
        msg = f"the server is at its limit of {settings.max_streams} streams; retry later"
        raise StreamError("too_many_streams", msg, TRY_LATER)


async def _fail(websocket: WebSocket, exc: StreamError) -> None:
    """Tell the client why, then close; the socket may already be gone."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_text(json.dumps(exc.to_message()))
        await websocket.close(exc.close_code, exc.code)


class _Session:
    """One connection: reads frames, feeds the Stream, sends what it produces."""

    def __init__(
        self,
        websocket: WebSocket,
        settings: Settings,
        runtimes: dict[str, ModelRuntime],
        stats: StreamStats,
    ) -> None:
        self.ws = websocket
        self.settings = settings
        self.runtimes = runtimes
        self.stats = stats
        self.stream: Stream | None = None
        self.decoder: PcmDecoder | None = None
        self.lifecycle = websocket.app.state.lifecycle

    async def run(self) -> None:
        message = await self._receive()
        if message is None:
            return
        first_audio = message.get("bytes")
        if first_audio is None:
            control = parse_control(message.get("text") or "")
            if control["type"] == "stop":
                await self._end()
                return
            if control["type"] != "start":
                raise StreamError("invalid_message", 'the first text frame must be "start"')
            start = parse_start(control)
        else:
            start = StartRequest()
        await self._begin(start)
        if first_audio is not None:
            await self._audio(first_audio)
        while (message := await self._receive()) is not None:
            if message.get("bytes") is not None:
                await self._audio(message["bytes"])
                continue
            control = parse_control(message.get("text") or "")
            if control["type"] == "stop":
                await self._send(await self._finish())
                await self._end()
                return
            if control["type"] == "start":
                raise StreamError("unexpected_start", "start must be the first frame")
            raise StreamError("invalid_message", f"unknown message type {control['type']!r}")

    async def _receive(self) -> Message | None:
        """The next text or binary frame; None when the client went away."""
        receive = asyncio.ensure_future(self.ws.receive())
        stopping = asyncio.ensure_future(self.lifecycle.stopping.wait())
        done, _ = await asyncio.wait(
            {receive, stopping},
            timeout=self.settings.stream_idle_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        stopping.cancel()
        if receive not in done:
            receive.cancel()
            if stopping in done:
                await self._drained()
            await self._idle()
        message = receive.result()
        if message["type"] == "websocket.disconnect":
            return None
        size = len(message.get("bytes") or b"") + len(message.get("text") or "")
        limit = self.settings.stream_max_frame_bytes if message.get("bytes") else MAX_TEXT_BYTES
        if size > limit:
            raise StreamError("frame_too_large", f"frames are limited to {limit} bytes", TOO_BIG)
        return message

    async def _drained(self) -> NoReturn:
        """SIGTERM: finals for all audio received, then 1012 so the client reconnects elsewhere."""
        if self.stream is not None:
            await self._send(await self._finish())
        raise StreamError("server_draining", "the server is restarting; reconnect", RESTART)

    async def _idle(self) -> NoReturn:
        if self.stream is not None:
            await self._send(await self._finish())
        secs = self.settings.stream_idle_timeout
        raise StreamError("idle_timeout", f"no frame for {secs:g} s; send stop to finish")

    async def _begin(self, start: StartRequest) -> None:
        runtime = self._pick(start.model)
        engine, s = runtime.engine, self.settings
        loaded = engine.loaded
        assert loaded.tokenizer is not None
        windowing = windowing_for(
            loaded,
            chunk=s.stream_chunk_seconds,
            left=s.stream_left_context_seconds,
            lookahead=s.stream_lookahead_seconds,
            pause=s.stream_pause_seconds,
            max_segment=s.stream_max_segment_seconds,
            parallel=s.stream_parallel_windows,
        )

        async def infer(window: Any) -> Any:
            return await runtime.batcher.submit(
                window, len(window), priority=STREAM_PRIORITY, timeout=s.request_timeout
            )

        self.stream = Stream(
            windowing, loaded.tokenizer, loaded.frame_seconds, infer, interim=start.interim_results
        )
        self.decoder = PcmDecoder(start.encoding, start.sample_rate, engine.sampling_rate)
        ready = {"type": "ready", "model": runtime.name, "sample_rate": start.sample_rate}
        await self._send([{**ready, "encoding": start.encoding}])

    def _pick(self, name: str | None) -> ModelRuntime:
        if name:
            runtime = self.runtimes.get(name)
            if runtime is None:
                raise StreamError("model_not_found", f"no served model is named {name!r}")
            if runtime.engine.task != "transcribe":
                raise StreamError("wrong_task", f"{name!r} does not transcribe")
            return runtime
        for runtime in self.runtimes.values():
            if runtime.engine.task == "transcribe":
                return runtime
        raise StreamError("model_not_found", "no served model transcribes")

    async def _audio(self, data: bytes) -> None:
        assert self.stream is not None and self.decoder is not None
        self.stream.feed(self.decoder.decode(data))
        self.stats.peak_pending_samples = max(
            self.stats.peak_pending_samples, self.stream.peak_pending
        )
        await self._send(await self.stream.advance())

    async def _finish(self) -> list[dict[str, Any]]:
        assert self.stream is not None and self.decoder is not None
        self.stream.feed(self.decoder.flush())
        return await self.stream.finish()

    async def _end(self) -> None:
        seconds = self.decoder.samples_in / self.decoder.rate if self.decoder else 0.0
        await self._send([{"type": "end", "duration": round(seconds, 6)}])
        await self.ws.close(NORMAL)

    async def _send(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            await self.ws.send_text(json.dumps(message))
