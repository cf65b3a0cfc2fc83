"""A header read timeout for uvicorn: a connection must finish a request's headers in time.

uvicorn bounds the idle time between requests (keep-alive) but not the time before the first
request, nor a request whose headers trickle in (issue 20: idle and partial-header sockets
were still held after 90 s, bounded only by the open-file limit: a slow-loris client). The
body is bounded per read by the middleware (drain.timed_receive).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """httptools protocol that closes a connection whose request headers are not complete
    within `header_timeout` seconds of the connection or of the request's first byte."""

    header_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_with(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn.Config(http=...) with this timeout."""
    attrs = {"header_timeout": header_timeout}
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), attrs)
