"""Flood a real server at a multiple of its measured capacity (open loop) and report what the
admission did: status counts, accepted latency p50/p99, and the time to normal afterwards.

    python benchmarks/bench_flood.py [--factor 4] [--seconds 60] [--clip-seconds 5]
                                     [--max-queue-time 10] [--out flood.json]

127.0.0.1 only: the server is started here (`python -m service serve`, demo model). Steps:
1. capacity: closed loop with `--concurrency` clients for `--calibrate` s -> requests/s;
   the normal latency is the median of one client alone;
2. flood: requests sent at factor x capacity on a fixed schedule whatever the answers (open
   loop), at most `--max-outstanding` in flight (the bound on this script's own sockets);
3. after: one request every 0.25 s until one is answered within 1.5x the normal latency.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._server import Server  # noqa: E402

MODEL = ROOT / "service" / "models" / "demo-ctc"
RAW = {"content-type": "audio/wav"}


def clip(seconds: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    x = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    x += 0.02 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, x, 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def one(client: httpx.AsyncClient, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        r = await client.post("/v1/transcribe", content=body, headers=RAW)
        status = r.status_code
    except httpx.HTTPError as exc:
        status = f"{type(exc).__name__}"  # type: ignore[assignment]
    return status, time.perf_counter() - started


async def capacity(
    client: httpx.AsyncClient, body: bytes, concurrency: int, seconds: float
) -> tuple[float, float]:
    """(requests per second with `concurrency` clients, median latency of one client)."""
    alone = [(await one(client, body))[1] for _ in range(5)]
    done = 0
    end = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < end:
            status, _ = await one(client, body)
            done += status == 200

    started = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done / (time.monotonic() - started), statistics.median(alone)


async def flood(
    client: httpx.AsyncClient, body: bytes, rate: float, seconds: float, max_outstanding: int
) -> list[tuple[object, float]]:
    results: list[tuple[object, float]] = []
    gate = asyncio.Semaphore(max_outstanding)
    tasks = []

    async def send() -> None:
        async with gate:
            results.append(await one(client, body))

    start = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if gate.locked():  # the bound on our own sockets: count it, do not queue it
            results.append(("client_bound", 0.0))
            continue
        tasks.append(asyncio.create_task(send()))
    await asyncio.gather(*tasks)
    return results


async def time_to_normal(
    client: httpx.AsyncClient, body: bytes, normal: float, limit: float = 120.0
) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        status, latency = await one(client, body)
        if status == 200 and latency <= 1.5 * normal:
            return time.monotonic() - start
        await asyncio.sleep(0.25)
    return float("inf")


async def run(args: argparse.Namespace) -> dict:
    body = clip(args.clip_seconds)
    server_args = ["--device", "cpu", "--max-queue-time", str(args.max_queue_time)]
    log = Path(args.out).with_suffix(".server.log")
    with Server(MODEL, server_args, log) as url:
        limits = httpx.Limits(max_connections=args.max_outstanding + 8)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
            cap, normal = await capacity(client, body, args.concurrency, args.calibrate)
            results = await flood(
                client, body, args.factor * cap, args.seconds, args.max_outstanding
            )
            after = await time_to_normal(client, body, normal)
    statuses = Counter(str(s) for s, _ in results)
    accepted = sorted(t for s, t in results if s == 200)
    pct = (
        (lambda q: accepted[min(len(accepted) - 1, int(q * len(accepted)))])
        if accepted
        else (lambda q: float("nan"))
    )
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
        "clip_seconds": args.clip_seconds,
        "capacity_rps": round(cap, 3),
        "normal_latency_s": round(normal, 3),
        "flood_rps": round(args.factor * cap, 3),
        "sent": len(results),
        "statuses": dict(statuses),
        "accepted_p50_s": round(pct(0.5), 3),
        "accepted_p99_s": round(pct(0.99), 3),
        "accepted_max_s": round(accepted[-1], 3) if accepted else None,
        "max_queue_time_s": args.max_queue_time,
        "time_to_normal_s": round(after, 2),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factor", type=float, default=4.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--clip-seconds", type=float, default=5.0)
    p.add_argument("--max-queue-time", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--calibrate", type=float, default=15.0)
    p.add_argument("--max-outstanding", type=int, default=256)
    p.add_argument("--out", default="flood.json")
    args = p.parse_args()
    report = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
