"""Per-upload cost of isolated decoding on a 10 s WebM/Opus file: in process (unsafe), a warm
pool of decoder processes (what the server does), and one fresh process per upload.

    python benchmarks/bench_decode.py [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service import sandbox  # noqa: E402
from service.audio import decode_audio  # noqa: E402

COMMON = dict(target_rate=16_000, max_seconds=3600.0, min_samples=400)


def webm(seconds: float) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.webm"
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=f=440:r=48000",
                "-t",
                str(seconds),
                "-c:a",
                "libopus",
                str(out),
            ],
            check=True,
        )
        return out.read_bytes()


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    data = webm(10.0)
    limits = sandbox.PoolLimits(workers=1)
    decoders = sandbox.pool(limits)
    decoders.start()

    def in_process() -> None:
        decode_audio(data, **COMMON)

    def pooled() -> None:
        asyncio.run(sandbox.decode_isolated(data, limits, **COMMON))

    def fresh() -> None:
        worker = sandbox._Worker(limits.memory_bytes)
        try:
            worker.decode(data, 60.0, **COMMON)
        finally:
            worker.kill()

    pooled()  # the worker's first decode loads FFmpeg's codec tables
    results = {
        name: timed(fn, args.runs)
        for name, fn in (("in_process", in_process), ("pool", pooled), ("fresh_process", fresh))
    }
    sandbox.close_pool()
    for name, seconds in results.items():
        extra = seconds - results["in_process"]
        print(f"{name:14s} {seconds * 1000:8.1f} ms  (+{extra * 1000:.1f} ms over in process)")


if __name__ == "__main__":
    main()
