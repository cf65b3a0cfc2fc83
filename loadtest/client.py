"""HTTP load: open loop (constant or Poisson arrivals), closed loop (fixed concurrency), ramp.

Open loop sends on a schedule that does not wait for answers, and measures each latency from
the request's scheduled send time, so a slow server cannot hide its queueing by slowing the
client down (no coordinated omission). Every scheduled request ends up in the results: answered,
refused with a status code, or failed with a client-side error (timeout, connection).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from loadtest.audio import Clip


@dataclass
class Result:
    """One request (or one WebSocket stream): when it was due, how it ended, how long it took."""

    scheduled: float  # seconds from the start of the run
    clip: str
    audio_seconds: float
    status: int = 0  # HTTP status; 0 when no response came back
    error: str | None = None  # the service's error code, or a client-side failure name
    latency: float | None = None  # client-measured, from the scheduled send time
    queue: float | None = None  # x-queue-time
    inference: float | None = None  # x-inference-time
    server_total: float | None = None  # x-total-time
    offered_rate: float | None = None  # requests/s offered in this step (open loop and ramp)
    kind: str = "http"
    extra: dict = field(default_factory=dict)  # stream timings

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = Callable[[Result], None]


def make_client(timeout: float, api_key: str | None = None) -> httpx.AsyncClient:
    """No connection limit: a capped pool would queue requests inside the client."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        headers=headers,
    )


async def send(
    client: httpx.AsyncClient,
    url: str,
    clip: Clip,
    scheduled: float,
    t0: float,
    model: str | None = None,
) -> Result:
    """POSTs the clip as the raw body; latency counts from t0 + scheduled."""
    result = Result(scheduled, clip.name, clip.seconds)
    params = {"model": model} if model else None
    try:
        response = await client.post(
            url, content=clip.data, headers={"content-type": clip.content_type}, params=params
        )
    except httpx.TimeoutException:
        result.error = "client_timeout"
    except Exception as exc:  # connection refused or reset, protocol error: still counted
        result.error = f"client_{type(exc).__name__}"
    else:
        result.status = response.status_code
        if response.status_code >= 400:
            result.error = _error_code(response)
        h = response.headers
        result.queue = _float(h.get("x-queue-time"))
        result.inference = _float(h.get("x-inference-time"))
        result.server_total = _float(h.get("x-total-time"))
    result.latency = time.perf_counter() - (t0 + scheduled)
    return result


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}"


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def arrivals(rate: float, duration: float, poisson: bool, limit: int, seed: int) -> list[float]:
    """Send times in [0, duration): evenly spaced, or a Poisson process of the same rate."""
    rng = random.Random(seed)
    times, t = [], 0.0
    while len(times) < limit:
        t += rng.expovariate(rate) if poisson else (1.0 / rate if times else 0.0)
        if t >= duration:
            break
        times.append(t)
    return times


async def open_loop(
    client: httpx.AsyncClient,
    url: str,
    clips: list[Clip],
    rate: float,
    duration: float,
    *,
    poisson: bool = False,
    max_requests: int = 10_000,
    seed: int = 0,
    progress: Progress | None = None,
    model: str | None = None,
    offset: float = 0.0,
) -> list[Result]:
    """Sends at `rate` requests/s for `duration` s regardless of answers; waits for all."""
    schedule = arrivals(rate, duration, poisson, max_requests, seed)
    t0 = time.perf_counter()
    tasks = []
    for i, at in enumerate(schedule):
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(client, url, clips[i % len(clips)], at, t0, model))
        if progress:
            task.add_done_callback(lambda t: progress(t.result()))
        tasks.append(task)
    results = list(await asyncio.gather(*tasks))
    for r in results:
        r.offered_rate = rate
        r.scheduled += offset
    return results


async def closed_loop(
    client: httpx.AsyncClient,
    url: str,
    clips: list[Clip],
    concurrency: int,
    duration: float,
    *,
    max_requests: int = 10_000,
    progress: Progress | None = None,
    model: str | None = None,
) -> list[Result]:
    """`concurrency` workers, each sending its next request when the last one is answered."""
    t0 = time.perf_counter()
    results: list[Result] = []
    counter = iter(range(max_requests))

    async def worker() -> None:
        for i in counter:
            scheduled = time.perf_counter() - t0
            if scheduled >= duration:
                return
            result = await send(client, url, clips[i % len(clips)], scheduled, t0, model)
            results.append(result)
            if progress:
                progress(result)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def ramp(
    client: httpx.AsyncClient,
    url: str,
    clips: list[Clip],
    rates: list[float],
    step_duration: float,
    *,
    poisson: bool = False,
    max_requests: int = 10_000,
    seed: int = 0,
    progress: Progress | None = None,
    model: str | None = None,
    stop_after_knee: bool = True,
) -> list[Result]:
    """Open-loop steps of increasing rate; stops one step after the server stops keeping up."""
    results: list[Result] = []
    started = time.perf_counter()
    saturated = 0
    for k, rate in enumerate(rates):
        left = max_requests - len(results)
        if left <= 0:
            break
        step_started = time.perf_counter()
        step = await open_loop(
            client,
            url,
            clips,
            rate,
            step_duration,
            poisson=poisson,
            max_requests=left,
            seed=seed + k,
            progress=progress,
            model=model,
            offset=step_started - started,
        )
        results += step
        if not keeps_up(step, rate, time.perf_counter() - step_started):
            saturated += 1
            if stop_after_knee and saturated >= 2:
                break
    return results


def keeps_up(step: list[Result], rate: float, wall: float) -> bool:
    """The server kept up with an open-loop step: under 1% errors and no growing queue
    (the latest quarter of requests is not much slower than the first quarter)."""
    if not step:
        return False
    failed = sum(not r.ok for r in step)
    if failed > 0.01 * len(step):
        return False
    ordered = sorted((r for r in step if r.latency is not None), key=lambda r: r.scheduled)
    q = max(1, len(ordered) // 4)
    early = statistics.median(r.latency for r in ordered[:q])  # type: ignore[misc]
    late = statistics.median(r.latency for r in ordered[-q:])  # type: ignore[misc]
    return late <= 2 * early + 0.25


def ramp_rates(start: float, stop: float, step: float | None, factor: float | None) -> list[float]:
    """Offered rates from start to stop: arithmetic (step) or geometric (factor) steps."""
    rates = [start]
    while True:
        nxt = rates[-1] * factor if factor else rates[-1] + (step or start)
        if nxt > stop + 1e-9:
            return rates
        rates.append(round(nxt, 6))
