"""Pure ASGI middleware: body-size limit while reading, draining, timing headers, metrics."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.drain import run_until_aborted, timed_receive
from service.errors import ServiceError, TooLargeError, UnavailableError
from service.lifecycle import Lifecycle

# Paths that stay open while starting and draining (probes and scraping).
OPS_PATHS = ("/healthz", "/readyz", "/metrics")
# The page and the API docs: open while starting and draining too.
OPEN_PATHS = ("/", "/docs", "/openapi.json")
MULTIPART_SLACK = 64 * 1024


class RequestMiddleware:
    def __init__(
        self, app: ASGIApp, lifecycle: Lifecycle, max_upload: int, body_timeout: float = 60.0
    ) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.lifecycle = lifecycle
        self.max_upload = max_upload  # what the error message names
        # Room for multipart framing; read_upload checks each file against max_upload itself.
        self.max_body = max_upload + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers += _timing_headers(state, started)
                message = {**message, "headers": headers}
            await send(message)

        path: str = scope["path"]
        if path in OPS_PATHS or path.startswith("/static") or path in OPEN_PATHS:
            await self.app(scope, receive, timed_send)  # no gate, no limit, not in the metrics
            return
        if not self.lifecycle.accepting:
            message = "the server is draining" if self.lifecycle.draining else "not ready yet"
            await _reject(send, started, UnavailableError(message))
            self._record(scope, 503, started)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _reject(send, started, _too_large(self.max_upload))
            self._record(scope, 413, started)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # a chunked or lying body: stop reading now
                    raise _too_large(self.max_upload)
            return message

        self.lifecycle.enter()
        try:
            receive_body = timed_receive(limited_receive, self.body_timeout)
            await run_until_aborted(
                self.app, scope, receive_body, timed_send, self.lifecycle.aborted
            )
        finally:
            self.lifecycle.leave()
            self._record(scope, status, started)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        metrics.REQUESTS.labels(endpoint, str(status)).inc()
        metrics.REQUEST_DURATION.labels(endpoint).observe(time.perf_counter() - started)


def _too_large(limit: int) -> TooLargeError:
    return TooLargeError(f"the request body is larger than {limit} bytes")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _timing_headers(state: dict[str, Any], started: float) -> list[tuple[bytes, bytes]]:
    total = time.perf_counter() - started
    values = (
        ("x-queue-time", state.get("queue_time", 0.0)),
        ("x-inference-time", state.get("inference_time", 0.0)),
        ("x-decode-time", state.get("decode_time", 0.0)),
        ("x-total-time", total),
    )
    return [(k.encode(), f"{v:.6f}".encode()) for k, v in values]


async def _reject(send: Send, started: float, exc: ServiceError) -> None:
    """Answer before the app sees the request (the app's handlers would read the body)."""
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
    headers += _timing_headers({}, started)
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
