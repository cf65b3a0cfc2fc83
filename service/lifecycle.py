"""Readiness, draining and in-flight accounting, shared by the app and the server runner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from service.metrics import READY

log = logging.getLogger(__name__)
# After the drain timeout: time for the aborted requests' 503s to be written.
ABORT_GRACE_S = 2.0


class Lifecycle:
    """Not ready -> ready (models loaded and warm) -> draining (SIGTERM) -> stopped."""

    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.inflight = 0  # HTTP requests and WebSocket streams being served
        self._idle = asyncio.Event()
        self._idle.set()
        self._drain_deadline: float | None = None
        self.stopping = asyncio.Event()  # set when the drain begins: open streams wind up
        self.aborted = asyncio.Event()  # set when the drain times out: requests get a 503
        self.drain_timed_out = False

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        READY.set(1 if ready and not self.draining else 0)

    @property
    def accepting(self) -> bool:
        return self.ready and not self.draining

    def enter(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    def drain_time_left(self, timeout: float) -> float:
        """Seconds left of a drain begun by drain(); `timeout` when none was."""
        if self._drain_deadline is None:
            return timeout
        return max(0.0, self._drain_deadline - time.monotonic())

    async def drain(self, timeout: float) -> bool:
        """Stops intake at once, then waits for what was accepted; True if all finished."""
        self.draining = True
        self.stopping.set()
        READY.set(0)
        started = time.monotonic()
        self._drain_deadline = started + timeout
        log.info("draining: %d in flight, waiting up to %.0f s", self.inflight, timeout)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("drain timeout: %d requests still in flight get 503", self.inflight)
            self.drain_timed_out = True
            self.aborted.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), ABORT_GRACE_S)
            return False
        log.info("drained in %.2f s", time.monotonic() - started)
        return True
