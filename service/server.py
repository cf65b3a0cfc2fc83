"""uvicorn with a graceful drain: SIGTERM -> not ready, refuse new work, finish, exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.lifecycle import Lifecycle
from service.slow_clients import protocol_with

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn stops listening at once on SIGTERM; we first drain with the socket open so
    /readyz can answer 503 and load balancers see the pod leave, then let uvicorn stop."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_timeout: float):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_timeout = drain_timeout
        self._signalled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the captured signal after shutdown, which would make the exit
        # status 143 instead of 0; a drained server has done what SIGTERM asked.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled or self._loop is None:  # a second signal: stop now
            self.force_exit = self.should_exit = True
            return
        self._signalled = True
        # A signal handler may run in the middle of the loop's own code: hand over safely,
        # which also wakes the loop at once.
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        await self.lifecycle.drain(self.drain_timeout)
        self.should_exit = True


def run(app: FastAPI, host: str, port: int, log_level: str, drain_timeout: float) -> None:
    settings = app.state.settings
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        http=protocol_with(settings.header_timeout),
        # uvicorn's WebSocket defaults (16 MiB x 32 queued messages) would buffer ~512 MiB per
        # stream before the stream's own back-pressure applies; keep the socket's share small.
        ws_max_size=2 * settings.stream_max_frame_bytes,
        ws_max_queue=4,
    )
    lifecycle: Lifecycle = app.state.lifecycle
    DrainingServer(config, lifecycle, drain_timeout).run()
    if lifecycle.drain_timed_out:
        # Every request was answered (503 for the ones cut off), but a batch may still be
        # computing in a model thread; interpreter shutdown under it ends in std::terminate
        # and SIGABRT (issue 20). Nothing is left to do: leave now, with the drain's status.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
