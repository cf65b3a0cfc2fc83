"""service/batcher.py with a fake run_batch that takes milliseconds."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from service.batcher import STREAM_PRIORITY, Batcher, BatchObserver
from service.cost import fill_batches, padded_cost
from service.errors import (
    AudioError,
    InferenceError,
    OverloadedError,
    TimeoutError_,
    UnavailableError,
)


class Fake:
    """run_batch that records its batches, answers payload * 10, and can be held at a gate."""

    def __init__(self, fail: Callable[[list[Any]], None] | None = None, delay: float = 0.0):
        self.batches: list[list[Any]] = []
        self.fail = fail
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, payloads: list[Any]) -> list[Any]:
        self.batches.append(list(payloads))
        self.entered.set()
        assert self.gate.wait(10)
        time.sleep(self.delay)
        if self.fail is not None:
            self.fail(payloads)
        return [AudioError("bad item") if p == "bad" else p * 10 for p in payloads]


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Batcher[Any, Any]]]:
    made: list[Batcher[Any, Any]] = []

    def factory(run: Fake, **kw: Any) -> Batcher[Any, Any]:
        kw.setdefault("max_wait_ms", 20)
        b: Batcher[Any, Any] = Batcher(run, **kw)
        b.start()
        made.append(b)
        return b

    yield factory
    for b in made:
        b.run_batch.gate.set()  # type: ignore[attr-defined]
        await b.stop(drain_timeout=2)


async def hold(b: Batcher[Any, Any], fake: Fake, payload: Any) -> asyncio.Task[Any]:
    """Submit a payload and wait until the worker is computing it (behind the closed gate)."""
    fake.gate.clear()
    fake.entered.clear()
    task = asyncio.create_task(b.submit(payload, 1))
    assert await asyncio.to_thread(fake.entered.wait, 5)
    return task


async def until(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


async def test_two_concurrent_submits_form_one_batch(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_wait_ms=100)
    assert await asyncio.gather(b.submit(1, 10), b.submit(2, 10)) == [10, 20]
    assert fake.batches == [[1, 2]]


async def test_max_batch_size(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_batch_size=4, max_wait_ms=100)
    assert await asyncio.gather(*(b.submit(i, 1) for i in range(10))) == list(range(0, 100, 10))
    assert sorted(len(x) for x in fake.batches) == [2, 4, 4]


async def test_max_batch_cost_and_oversized_item(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_batch_cost=100, max_wait_ms=100)
    costs = {1: 30, 2: 30, 3: 30, 4: 40, 5: 500}
    await asyncio.gather(*(b.submit(p, c) for p, c in costs.items()))
    assert [5] in fake.batches  # over the limit on its own: runs alone
    for batch in fake.batches:
        assert len(batch) == 1 or padded_cost([costs[p] for p in batch]) <= 100
    assert sorted(p for batch in fake.batches for p in batch) == [1, 2, 3, 4, 5]


async def test_similar_lengths_grouped(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_batch_size=3, max_batch_cost=310, max_wait_ms=100)
    costs = [1, 100, 2, 101, 3, 102]
    await asyncio.gather(*(b.submit(c, c) for c in costs))
    assert sorted(fake.batches) == [[1, 2, 3], [100, 101, 102]]


async def test_priority_lane_goes_first(make: Any) -> None:
    """A live chunk waits only for the batch computing: it takes the place of the batch
    already formed in the hand-off, which then runs next, before later requests."""
    fake = Fake()
    b = make(fake, max_batch_size=1, max_wait_ms=0)
    first = await hold(b, fake, 1)
    handed = asyncio.create_task(b.submit(2, 1))  # fills the one-batch hand-off
    await until(lambda: b.queue_depth == 0 and b.inflight_cost == 2)
    rest = asyncio.create_task(b.submit(3, 1))
    await asyncio.sleep(0.01)
    live = asyncio.create_task(b.submit(4, 1, priority=STREAM_PRIORITY))
    await until(lambda: b.queue_depth == 2)  # 4 handed off in place of 2, which is queued
    fake.gate.set()
    assert await asyncio.gather(first, handed, rest, live) == [10, 20, 30, 40]
    assert fake.batches == [[1], [4], [2], [3]]


async def test_a_reclaimed_request_past_its_deadline_times_out(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_batch_size=1, max_wait_ms=0)
    first = await hold(b, fake, 1)
    handed = asyncio.create_task(b.submit(2, 1, timeout=0.05))
    await until(lambda: b.queue_depth == 0 and b.inflight_cost == 2)
    await asyncio.sleep(0.1)  # its timer fires while it is handed off: the worker would check
    live = asyncio.create_task(b.submit(4, 1, priority=STREAM_PRIORITY))
    with pytest.raises(TimeoutError_):
        await handed  # reclaimed past its deadline: answered at once, not requeued
    fake.gate.set()
    assert await asyncio.gather(first, live) == [10, 40]
    assert fake.batches == [[1], [4]]


async def test_cancelled_request_is_dropped_before_compute(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_wait_ms=0)
    first = await hold(b, fake, 1)
    queued = [asyncio.create_task(b.submit(p, 1)) for p in (2, 3, 4)]
    await asyncio.sleep(0.01)
    queued[1].cancel()  # client gone, wherever the request is: queue or hand-off
    fake.gate.set()
    assert await first == 10
    assert await queued[0] == 20 and await queued[2] == 40
    with pytest.raises(asyncio.CancelledError):
        await queued[1]
    assert 3 not in [p for batch in fake.batches for p in batch]
    assert b.inflight_cost == 0 and b.queue_depth == 0


async def test_queue_full_is_429_with_retry_after(make: Any) -> None:
    b = make(Fake(), max_queue=2, max_wait_ms=10_000, max_batch_size=100)
    waiting = [asyncio.create_task(b.submit(p, 1)) for p in (1, 2)]
    await until(lambda: b.queue_depth == 2)
    with pytest.raises(OverloadedError) as info:
        await b.submit(3, 1)
    assert info.value.status == 429 and info.value.retry_after is not None
    assert info.value.retry_after >= 1
    await b.stop(drain_timeout=2)  # draining forms the waiting batch at once
    assert [await t for t in waiting] == [10, 20]


async def test_exception_fails_only_its_batch(make: Any) -> None:
    def fail(payloads: list[Any]) -> None:
        if 0 in payloads:
            raise ValueError("broken input")

    b = make(Fake(fail=fail), max_batch_size=1)
    results = await asyncio.gather(b.submit(0, 1), b.submit(1, 1), return_exceptions=True)
    assert isinstance(results[0], InferenceError) and results[0].status == 500
    assert isinstance(results[0].__cause__, ValueError)
    assert results[1] == 10
    assert await b.submit(2, 1) == 20  # the worker goes on


async def test_per_item_exception_fails_alone(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_wait_ms=100)
    results = await asyncio.gather(b.submit("bad", 1), b.submit(3, 1), return_exceptions=True)
    assert isinstance(results[0], AudioError) and results[1] == 30
    assert len(fake.batches) == 1


async def test_oom_splits_the_batch(make: Any) -> None:
    def fail(payloads: list[Any]) -> None:
        if len(payloads) > 2 or 99 in payloads:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    fake = Fake(fail=fail)
    b = make(fake, max_wait_ms=100)
    results = await asyncio.gather(*(b.submit(p, 1) for p in (1, 2, 3, 99)), return_exceptions=True)
    assert results[:3] == [10, 20, 30]
    assert isinstance(results[3], InferenceError) and "out of memory" in results[3].message
    assert [len(x) for x in fake.batches] == [4, 2, 2, 1, 1]


async def test_stop_drains_accepted_requests(make: Any) -> None:
    b = make(Fake(delay=0.005), max_batch_size=2, max_wait_ms=1)
    tasks = [asyncio.create_task(b.submit(p, 1)) for p in range(7)]
    await asyncio.sleep(0)
    await b.stop(drain_timeout=5)
    assert [await t for t in tasks] == list(range(0, 70, 10))
    with pytest.raises(UnavailableError) as info:
        await b.submit(1, 1)
    assert info.value.status == 503


async def test_restarts_after_stop(make: Any) -> None:
    fake = Fake()
    b = make(fake)
    assert await b.submit(1, 1) == 10
    await b.stop()
    b.start()
    assert await asyncio.wait_for(b.submit(2, 1), 5) == 20
    with pytest.raises(RuntimeError, match="already running"):
        b.start()


async def test_stop_fails_what_it_cannot_finish(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_wait_ms=0)
    running = await hold(b, fake, 1)
    queued = asyncio.create_task(b.submit(2, 1))
    await asyncio.sleep(0.01)
    await b.stop(drain_timeout=0.05)
    for task in (running, queued):
        with pytest.raises(UnavailableError):
            await task
    fake.gate.set()


async def test_deadline_passed_is_a_timeout(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_batch_size=1, max_wait_ms=0)
    first = await hold(b, fake, 1)
    handed = asyncio.create_task(b.submit(2, 1, timeout=0.05))  # waits in the hand-off
    await until(lambda: b.queue_depth == 0 and b.inflight_cost == 2)
    queued = asyncio.create_task(b.submit(3, 1, timeout=0.05))  # waits in the queue
    with pytest.raises(TimeoutError_):
        await queued  # the queue's timer fires while the worker is still busy
    fake.gate.set()
    assert await first == 10
    with pytest.raises(TimeoutError_) as info:
        await handed  # the worker checks the deadline before computing
    assert info.value.status == 504
    assert fake.batches == [[1]]


async def test_no_result_lost_under_500_concurrent_submits(make: Any) -> None:
    fake = Fake()
    b = make(fake, max_batch_size=16, max_wait_ms=1, max_queue=1000)
    results = await asyncio.gather(*(b.submit(i, 1 + i % 7) for i in range(500)))
    assert results == [i * 10 for i in range(500)]
    assert sorted(p for batch in fake.batches for p in batch) == list(range(500))
    assert max(len(x) for x in fake.batches) <= 16
    assert b.queue_depth == 0 and b.inflight_cost == 0


async def test_timings_and_observer(make: Any) -> None:
    events: list[tuple[str, Any]] = []

    class Recorder(BatchObserver):
        def queue_changed(self, depth: int, inflight_cost: int) -> None:
            events.append(("queue", (depth, inflight_cost)))

        def batch_started(self, size: int, padded_cost: int, queue_times: list[float]) -> None:
            events.append(("started", (size, padded_cost)))

        def batch_finished(self, size: int, seconds: float, error: BaseException | None) -> None:
            events.append(("finished", (size, error)))

    b = make(Fake(delay=0.02), observer=Recorder(), max_wait_ms=50)
    timed = await asyncio.gather(b.submit_timed(1, 5), b.submit_timed(2, 7))
    assert [t.result for t in timed] == [10, 20]
    assert all(t.queue_time >= 0 and t.inference_time >= 0.02 for t in timed)
    await until(lambda: ("queue", (0, 0)) in events[-1:])
    assert ("started", (2, 14)) in events and ("finished", (2, None)) in events
    assert ("queue", (1, 5)) in events and ("queue", (2, 12)) in events


# ---- service/cost.py: padded-cost batching shared by the batcher and the CLI ----


def test_fill_batches_bounds_cost_and_size_in_ascending_order():
    rng = random.Random(0)
    for _ in range(200):
        costs = [rng.randint(1, 120) for _ in range(rng.randint(0, 30))]
        max_size = rng.choice([None, 1, 3, 8])
        batches = fill_batches(costs, 100, max_size)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(costs)))  # every index once
        assert [costs[i] for i in flat] == sorted(costs)  # ascending cost order
        for b in batches:
            assert len(b) == 1 or padded_cost([costs[i] for i in b]) <= 100
            assert max_size is None or len(b) <= max_size
        # Greedy: a batch closes only because the next item would not fit.
        for b, nxt in zip(batches, batches[1:]):
            grown = padded_cost([costs[i] for i in [*b, nxt[0]]])
            assert grown > 100 or (max_size is not None and len(b) == max_size)


def test_an_item_over_the_cost_limit_is_its_own_batch():
    assert fill_batches([50, 500, 10, 40], 100) == [[2, 3], [0], [1]]
    assert padded_cost([]) == 0 and padded_cost([3, 7, 5]) == 21
