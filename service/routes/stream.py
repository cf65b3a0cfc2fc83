"""WebSocket /v1/stream: streaming transcription (docs/api.md, "Streaming transcription").

This module owns the protocol: message parsing, the session loop (optional start, binary audio,
stop; idle timeout; finals before a drain's 1012) and the one table from error to close code.
The served model's LiveStream does the audio and the transcription. Back-pressure: the next
frame is read only after every full chunk has run, so a client that sends faster than the model
keeps up waits in TCP, and a stream holds at most one frame plus one window of unprocessed audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

from service.audio import MAX_RATE, MIN_RATE
from service.errors import (
    BadFieldError,
    ServiceError,
    TooLargeError,
    UnauthorizedError,
    UnavailableError,
)
from service.lifecycle import Lifecycle
from service.options import parse_options
from service.routes.deps import bearer_token, key_is_valid, pick_model
from service.runtime import ServedModel
from service.schemas import End, ErrorMessage, Options, Ready, StreamMessage
from service.settings import Settings
from service.streaming import LiveStream, StreamStats

router = APIRouter(tags=["streaming"])
log = logging.getLogger(__name__)
MAX_TEXT_BYTES = 64 * 1024
ENCODINGS = ("pcm_s16le", "pcm_f32le")  # what the stream takes (REST raw bodies take more)

# WebSocket close codes (RFC 6455 and IANA's registry).
NORMAL, POLICY, TOO_BIG, INTERNAL, RESTART, TRY_LATER = 1000, 1008, 1009, 1011, 1012, 1013
# The one table from error to close code: by code first, then by HTTP status; any other
# client error is a policy violation (1008), any other server error a fault (1011).
CLOSE_BY_CODE = {"server_draining": RESTART}
CLOSE_BY_STATUS = {413: TOO_BIG, 429: TRY_LATER, 503: TRY_LATER}


def close_code(exc: ServiceError) -> int:
    default = POLICY if exc.status < 500 else INTERNAL
    return CLOSE_BY_CODE.get(exc.code, CLOSE_BY_STATUS.get(exc.status, default))


def protocol_error(code: str, message: str) -> ServiceError:
    """A message or field the protocol does not allow (closes with 1008)."""
    return BadFieldError(message, code=code)


@dataclass(frozen=True)
class StartRequest:
    """The optional first text frame; omitted, binary audio is 16 kHz pcm_s16le."""

    sample_rate: int = 16_000
    encoding: str = "pcm_s16le"
    model: str | None = None
    interim_results: bool = True
    options: Options = field(default_factory=Options)  # how finals are decoded


def parse_control(text: str) -> dict[str, Any]:
    """A client text frame -> a JSON object with a string `type`."""
    try:
        message = json.loads(text)
    except ValueError:
        raise protocol_error("invalid_json", "text frames must be JSON objects") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise protocol_error("invalid_message", 'a text frame needs a "type": "start" or "stop"')
    return message


def parse_start(message: dict[str, Any], settings: Settings | None = None) -> StartRequest:
    """Validate a start message's fields (unknown fields are ignored); the decoding fields
    (decoder, beam_width, alpha, beta, hotwords, hotword_weight) within the settings' limits."""
    rate = message.get("sample_rate", 16_000)
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
        raise protocol_error(
            "invalid_sample_rate", f"sample_rate must be an integer in {MIN_RATE}..{MAX_RATE} Hz"
        )
    encoding = message.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise protocol_error(
            "invalid_encoding", f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}"
        )
    model = message.get("model")
    if model is not None and not isinstance(model, str):
        raise protocol_error("invalid_field", "model must be a string")
    interim = message.get("interim_results", True)
    if not isinstance(interim, bool):
        raise protocol_error("invalid_field", "interim_results must be true or false")
    hotwords = message.get("hotwords") or []
    if isinstance(hotwords, str):
        hotwords = [hotwords]
    if not isinstance(hotwords, list):
        raise protocol_error("invalid_hotwords", "hotwords must be a list of strings")
    options = parse_options(message, settings or Settings(), hotwords)
    return StartRequest(rate, encoding, model or None, interim, options)


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    """Streaming transcription: start, binary PCM, stop -> ready, partials, finals, end."""
    state = websocket.app.state
    settings: Settings = state.settings
    streams: StreamStats = state.streams
    await websocket.accept()
    try:
        _admit(websocket, settings, streams)
        with streams.open(state.lifecycle):
            await _Session(websocket, settings, state.models, streams).run()
    except ServiceError as exc:
        if close_code(exc) == INTERNAL:
            log.error("stream failed: %s: %s", exc.code, exc.message)
        await _fail(websocket, exc)
    except WebSocketDisconnect:
        pass  # the client went away; nothing to tell it
    except Exception:
        log.exception("stream failed")
        await _fail(websocket, ServiceError("internal server error"))


def _admit(websocket: WebSocket, settings: Settings, streams: StreamStats) -> None:
    if settings.api_keys:  # browsers cannot set headers on a WebSocket: ?api_key= also works
        given = bearer_token(websocket.headers.get("authorization", ""))
        if not key_is_valid(given or websocket.query_params.get("api_key", ""), settings.api_keys):
            raise UnauthorizedError("a valid API key is required")
    if not websocket.app.state.lifecycle.accepting:
        raise UnavailableError("the server is not ready or is draining")
    if streams.active >= settings.max_streams:
        msg = f"the server is at its limit of {settings.max_streams} streams; retry later"
        raise UnavailableError(msg, code="too_many_streams")


async def _fail(websocket: WebSocket, exc: ServiceError) -> None:
    """Tell the client why, then close; the socket may already be gone."""
    message = ErrorMessage(**exc.body()["error"])
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_text(message.model_dump_json())
        await websocket.close(close_code(exc), exc.code)


class _Session:
    """One connection: reads frames, feeds the LiveStream, sends what it produces."""

    def __init__(
        self,
        websocket: WebSocket,
        settings: Settings,
        models: dict[str, ServedModel],
        streams: StreamStats,
    ) -> None:
        self.ws = websocket
        self.settings = settings
        self.models = models
        self.streams = streams
        self.live: LiveStream | None = None
        self.lifecycle: Lifecycle = websocket.app.state.lifecycle

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
                raise protocol_error("invalid_message", 'the first text frame must be "start"')
            start = parse_start(control, self.settings)
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
                raise protocol_error("unexpected_start", "start must be the first frame")
            raise protocol_error("invalid_message", f"unknown message type {control['type']!r}")

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
            raise TooLargeError(f"frames are limited to {limit} bytes", code="frame_too_large")
        return message

    async def _drained(self) -> NoReturn:
        """SIGTERM: finals for all audio received, then 1012 so the client reconnects elsewhere."""
        if self.live is not None:
            await self._send(await self._finish())
        raise UnavailableError("the server is restarting; reconnect", code="server_draining")

    async def _idle(self) -> NoReturn:
        if self.live is not None:
            await self._send(await self._finish())
        secs = self.settings.stream_idle_timeout
        raise ServiceError(
            f"no frame for {secs:g} s; send stop to finish", code="idle_timeout", status=408
        )

    async def _begin(self, start: StartRequest) -> None:
        model = pick_model(self.models, start.model, "transcribe")
        self.live = model.open_stream(
            start.encoding, start.sample_rate, start.interim_results, start.options
        )
        ready = Ready(
            model=model.name,
            sample_rate=start.sample_rate,
            encoding=start.encoding,
            language=model.language(start.options.language),
        )
        await self._send([ready])

    async def _audio(self, data: bytes) -> None:
        assert self.live is not None
        messages = await self._unless_aborted(self.live.feed(data))
        self.streams.peak_pending_samples = max(
            self.streams.peak_pending_samples, self.live.peak_pending
        )
        await self._send(messages)

    async def _finish(self) -> Sequence[StreamMessage]:
        assert self.live is not None
        return await self._unless_aborted(self.live.finish())

    async def _unless_aborted(
        self, work: Awaitable[Sequence[StreamMessage]]
    ) -> Sequence[StreamMessage]:
        """`work`'s messages; if the drain times out first, the work is dropped, the finals of
        what the model has computed are sent, and the stream closes 1012 (issue 20: uvicorn's
        shutdown closed it 1012 without them)."""
        assert self.live is not None
        task = asyncio.ensure_future(work)
        aborted = asyncio.ensure_future(self.lifecycle.aborted.wait())
        try:
            await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
            if not task.done():  # aborted, or this session itself was cancelled
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled():
            return task.result()
        await self._send(self.live.cut_short())
        covered = self.live.covered_seconds
        raise UnavailableError(
            f"the server is restarting: finals cover the first {covered:.2f} s; reconnect and "
            "send the rest",
            code="server_draining",
        )

    async def _end(self) -> None:
        seconds = self.live.seconds if self.live is not None else 0.0
        await self._send([End(duration=round(seconds, 6))])
        await self.ws.close(NORMAL)

    async def _send(self, messages: Sequence[StreamMessage]) -> None:
        for message in messages:
            await self.ws.send_text(message.model_dump_json())
