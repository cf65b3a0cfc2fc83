"""Dynamic batching: a bounded priority queue in front of one worker thread per model and device.

The event loop owns the queue and forms batches; a dedicated thread runs the sync `run_batch`.
Between them is a hand-off of one batch (TEI bounds that channel to 1), so the next batch is
formed while the current one computes; a higher-priority request (a live stream chunk) takes a
waiting lower-priority batch back out of the hand-off, so it waits for at most the batch that is
already computing. Nothing here knows about HTTP, torch or Wav2Vec2.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service.cost import padded_cost
from service.errors import (
    InferenceError,
    OverloadedError,
    ServiceError,
    TimeoutError_,
    UnavailableError,
)

P = TypeVar("P")
R = TypeVar("R")
log = logging.getLogger(__name__)

DEFAULT_PRIORITY = 0
STREAM_PRIORITY = -1  # lower runs first: live chunks never wait behind long REST clips


def is_oom(exc: BaseException) -> bool:
    """Default out-of-memory test; torch's OutOfMemoryError says 'out of memory'."""
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


@dataclass(eq=False)
class Request(Generic[P, R]):
    """One queued item: the payload, its cost, and the future its submitter awaits."""

    payload: P
    cost: int
    future: asyncio.Future[R]
    enqueued_at: float  # time.monotonic()
    deadline: float  # time.monotonic(); math.inf for none
    priority: int = DEFAULT_PRIORITY
    seq: int = 0  # FIFO order within a priority
    handed_off: bool = False  # left the queue for the worker (set on the loop)
    started_at: float | None = None  # compute began (set by the worker)
    finished_at: float | None = None

    @property
    def cancelled(self) -> bool:
        """True once nobody waits for the answer (client gone, timed out, failed)."""
        return self.future.done()

    def __lt__(self, other: Request[Any, Any]) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)


@dataclass(frozen=True)
class Timed(Generic[R]):
    """A result with the seconds its request spent queued and computing."""

    result: R
    queue_time: float
    inference_time: float


class BatchObserver:
    """Metrics hooks, no-ops here; the server overrides them to feed Prometheus."""

    def queue_changed(self, depth: int, inflight_cost: int) -> None:
        """Queue depth or in-flight cost changed (event-loop thread)."""

    def batch_started(self, size: int, padded_cost: int, queue_times: list[float]) -> None:
        """A batch is about to compute (worker thread)."""

    def batch_finished(self, size: int, seconds: float, error: BaseException | None) -> None:
        """A batch computed or raised (worker thread)."""


@dataclass
class Batcher(Generic[P, R]):
    """Queues requests, forms batches by priority and similar cost, runs them off the loop."""

    run_batch: Callable[[list[P]], Sequence[R | BaseException]]
    max_batch_size: int = 16
    max_batch_cost: int = 16_000 * 240
    max_wait_ms: float = 5.0
    max_queue: int = 256
    name: str = "batcher"
    observer: BatchObserver = field(default_factory=BatchObserver)
    oom: Callable[[BaseException], bool] = is_oom

    def __post_init__(self) -> None:
        self._queue: list[Request[P, R]] = []  # heap by (priority, seq)
        self._pending: set[Request[P, R]] = set()  # accepted and not yet answered
        self._seq = itertools.count()
        self._accepting = False
        self._inflight_cost = 0
        self._batch_seconds = 0.0  # moving average, for Retry-After
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handoff: queue.Queue[list[Request[P, R]] | None] = queue.Queue(maxsize=1)
        self._handoff_priority = math.inf  # priority of the batch last put in the hand-off
        self._thread: threading.Thread | None = None
        self._former: asyncio.Task[None] | None = None

    # ---- the event-loop side ----

    def start(self) -> None:
        """Start the batch former on the running loop and the worker thread (again after a
        stop: a fresh hand-off, since stop leaves its sentinel in the old one)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"{self.name} is already running")
        self._handoff = queue.Queue(maxsize=1)
        self._handoff_priority = math.inf
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._slot = asyncio.Semaphore(1)  # free places in the hand-off channel
        self._worker_done = asyncio.Event()
        self._accepting = True
        self._thread = threading.Thread(target=self._work, name=f"{self.name}-worker", daemon=True)
        self._thread.start()
        self._former = self._loop.create_task(self._form(), name=f"{self.name}-former")

    @property
    def queue_depth(self) -> int:
        """Requests waiting in the queue (not yet handed to the worker)."""
        return sum(not r.cancelled for r in self._queue)

    @property
    def inflight_cost(self) -> int:
        """Total cost of requests accepted and not yet answered."""
        return self._inflight_cost

    async def submit(
        self,
        payload: P,
        cost: int,
        *,
        priority: int = DEFAULT_PRIORITY,
        timeout: float | None = None,
    ) -> R:
        """Queue one payload and return its result."""
        return (await self.submit_timed(payload, cost, priority=priority, timeout=timeout)).result

    async def submit_timed(
        self,
        payload: P,
        cost: int,
        *,
        priority: int = DEFAULT_PRIORITY,
        timeout: float | None = None,
    ) -> Timed[R]:
        """Queue one payload; return its result with its queue and inference seconds."""
        if not self._accepting or self._loop is None:
            raise UnavailableError("the model is not accepting requests", retry_after=1.0)
        if self.queue_depth >= self.max_queue:
            self._queue = [r for r in self._queue if not r.cancelled]
            heapq.heapify(self._queue)
            raise OverloadedError("the queue is full, retry later", retry_after=self._retry_after())
        now = time.monotonic()
        deadline = math.inf if timeout is None else now + timeout
        fut: asyncio.Future[R] = self._loop.create_future()
        req = Request(payload, cost, fut, now, deadline, priority, next(self._seq))
        heapq.heappush(self._queue, req)
        if priority < self._handoff_priority:
            self._reclaim()
        self._pending.add(req)
        self._inflight_cost += cost
        timer = None if timeout is None else self._loop.call_later(timeout, self._expire, req)
        fut.add_done_callback(lambda _: self._done(req, timer))
        self._changed()
        # Cancelling the awaiting task cancels `fut`; the former and worker then drop it.
        result = await fut
        started = req.started_at or now
        return Timed(result, started - now, (req.finished_at or started) - started)

    def _reclaim(self) -> None:
        """Put a batch still waiting in the hand-off back in the queue, so that the former
        hands off the higher-priority lane first (the batch keeps its seq: it goes next)."""
        try:
            batch = self._handoff.get_nowait()
        except queue.Empty:
            return  # the worker has taken it already
        assert batch is not None  # the stop sentinel comes after accepting ends, as no submit
        self._handoff_priority = math.inf
        now = time.monotonic()
        for r in batch:
            r.handed_off = False
            if now > r.deadline and not r.future.done():  # its timer fired while handed off
                r.future.set_exception(_timeout(r))
            else:
                heapq.heappush(self._queue, r)
        self._slot.release()  # the hand-off place is free again

    def _expire(self, req: Request[P, R]) -> None:
        if not req.handed_off and not req.future.done():  # handed-off ones: the worker checks
            req.future.set_exception(_timeout(req))

    def _done(self, req: Request[P, R], timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
        self._pending.discard(req)
        self._inflight_cost -= req.cost
        self._changed()

    def _changed(self) -> None:
        self._wakeup.set()
        self.observer.queue_changed(self.queue_depth, self._inflight_cost)

    def _retry_after(self) -> float:
        batches_ahead = math.ceil(self.queue_depth / self.max_batch_size)
        return max(1.0, math.ceil(batches_ahead * self._batch_seconds))

    def _lane(self) -> list[Request[P, R]]:
        """The live requests of the highest-priority lane, oldest first."""
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)
        if not self._queue:
            return []
        top = self._queue[0].priority
        return sorted(r for r in self._queue if r.priority == top and not r.cancelled)

    def _select(self, lane: list[Request[P, R]]) -> list[Request[P, R]]:
        """The oldest request plus those closest to it in cost that keep the batch in bounds."""
        head = lane[0]
        batch, top = [head], head.cost  # one item over max_batch_cost still runs, alone
        for r in sorted(lane[1:], key=lambda r: (abs(r.cost - head.cost), r.seq)):
            if len(batch) == self.max_batch_size:
                break
            if max(top, r.cost) * (len(batch) + 1) <= self.max_batch_cost:
                batch.append(r)
                top = max(top, r.cost)
        return sorted(batch, key=lambda r: r.cost)

    async def _form(self) -> None:
        """Form batches until stopped and drained; one waits in the hand-off at a time."""
        while True:
            lane = self._lane()
            if not lane:
                if not self._accepting:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._select(lane)
            full = len(batch) == self.max_batch_size or len(batch) < len(lane)
            delay = lane[0].enqueued_at + self.max_wait_ms / 1000 - time.monotonic()
            if self._accepting and not full and delay > 0:
                self._wakeup.clear()  # wait for more, or for the window to close
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                continue
            await self._slot.acquire()
            lane = self._lane()  # things may have changed while the hand-off was full
            batch = self._select(lane) if lane else []
            if not batch:
                self._slot.release()
                continue
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            heapq.heapify(self._queue)
            for r in batch:
                r.handed_off = True
            self._handoff_priority = batch[0].priority
            self._handoff.put_nowait(batch)
            self._changed()
        await self._slot.acquire()
        self._handoff.put_nowait(None)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Refuse new work, finish what was accepted within the timeout, fail what is left."""
        if self._loop is None or self._former is None:
            return
        self._accepting = False
        self._wakeup.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._worker_done.wait()), drain_timeout)
        self._former.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._former
        for req in list(self._pending):
            if not req.future.done():
                msg = "the server is shutting down; the request was not computed in time"
                req.future.set_exception(UnavailableError(msg, retry_after=1.0))
        self._queue.clear()
        with contextlib.suppress(queue.Empty):
            self._handoff.get_nowait()  # its futures were failed above
        with contextlib.suppress(queue.Full):
            self._handoff.put_nowait(None)  # a worker still computing exits after its batch
        self._loop = None

    # ---- the worker thread ----

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        """Run fn on the loop; after stop() gave up on the loop there is no one to tell."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed
                loop.call_soon_threadsafe(fn, *args)

    def _work(self) -> None:
        """Worker thread: take batches from the hand-off and compute them, until told to stop."""
        while (batch := self._handoff.get()) is not None:
            self._call(self._slot.release)
            live = []
            for r in batch:
                if r.cancelled:
                    continue  # client gone or timed out while the batch waited
                if time.monotonic() > r.deadline:
                    self._call(_settle, r.future, None, _timeout(r))
                else:
                    live.append(r)
            if live:
                self._compute(live)
        self._call(self._worker_done.set)

    def _compute(self, batch: list[Request[P, R]]) -> None:
        """Run one batch; on OOM split it in halves; settle every future it holds."""
        start = time.monotonic()
        for r in batch:
            r.started_at = r.started_at or start
        self.observer.batch_started(
            len(batch), padded_cost([r.cost for r in batch]), [start - r.enqueued_at for r in batch]
        )
        error: BaseException | None = None
        try:
            results = list(self.run_batch([r.payload for r in batch]))
            if len(results) != len(batch):
                raise InferenceError(f"run_batch gave {len(results)} results for {len(batch)}")
        except BaseException as exc:  # every fault stays with its batch
            error = exc
        seconds = time.monotonic() - start
        if error is None:
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        self.observer.batch_finished(len(batch), seconds, error)
        if error is not None and self.oom(error) and len(batch) > 1:
            half = len(batch) // 2
            self._compute(batch[:half])
            self._compute(batch[half:])
            return
        if error is not None:
            log.error("%s: batch of %d failed: %r", self.name, len(batch), error)
            results = [_as_service_error(error) for _ in batch]
        for r, res in zip(batch, results, strict=True):
            r.finished_at = time.monotonic()
            if isinstance(res, BaseException):
                self._call(_settle, r.future, None, res)
            else:
                self._call(_settle, r.future, res, None)
        if error is not None and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt and friends: the futures are settled, now go


def _settle(fut: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    """Set a future on its loop unless it is already done (cancelled or timed out)."""
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _as_service_error(exc: BaseException) -> ServiceError:
    """Pass service errors through; wrap anything else as a 500 that keeps its cause."""
    if isinstance(exc, ServiceError):
        return exc
    wrapped = InferenceError(f"inference failed: {type(exc).__name__}: {exc}")
    wrapped.__cause__ = exc
    return wrapped


def _timeout(req: Request[Any, Any]) -> TimeoutError_:
    waited = time.monotonic() - req.enqueued_at
    return TimeoutError_(f"the request waited {waited:.1f} s in the queue, past its deadline")
