"""The end of a drain and the edges of a request: nothing is answered by uvicorn's 500.

- When the drain timeout runs out, requests still running are answered here with a JSON 503
  `unavailable` and Retry-After (issue 20: uvicorn cancelled them and sent `500 Internal Server
  Error` as text/plain), so the client retries on another replica.
- A body that stops arriving for `body_timeout` seconds ends the request (408) instead of
  holding a socket and a task for as long as the client likes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceError

RETRY_AFTER_S = 1  # seconds: another replica is normally ready by then


class BodyTimeoutError(ServiceError):
    status = 408
    code = "request_timeout"


def timed_receive(receive: Receive, timeout: float) -> Receive:
    """`receive` that gives up when the next piece of the body takes longer than `timeout`;
    once the body is complete, waiting (for a disconnect) is not timed."""
    body_done = False

    async def receive_in_time() -> Message:
        nonlocal body_done
        if body_done:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), timeout)
        except asyncio.TimeoutError:
            raise BodyTimeoutError(
                f"the request body stalled for more than {timeout:g} s"
            ) from None
        body_done = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return receive_in_time


async def run_until_aborted(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, aborted: asyncio.Event
) -> None:
    """Run the app for one request; when `aborted` is set before it has answered, cancel it
    and answer 503 unavailable with Retry-After."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    task = asyncio.ensure_future(app(scope, receive, tracking_send))
    stop = asyncio.ensure_future(aborted.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if task.done():
        task.result()  # re-raise what the app raised, as before this wrapper
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # the 503 replaces it
        await task
    if not started:
        await _unavailable(send)


async def _unavailable(send: Send) -> None:
    body = json.dumps(
        {"error": {"code": "unavailable", "message": "the server is shutting down; retry"}}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
