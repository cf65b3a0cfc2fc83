"""Soak a real server with a mixed load at half its measured capacity and record its memory.

    python benchmarks/bench_soak.py [--minutes 10] [--sample 60] [--idle 60] [--out soak.json]
                                    [--env MALLOC_ARENA_MAX=2 ...]

Mix: REST transcribe, classify and the OpenAI endpoint with clips of 1-20 s, plus two
real-time WebSocket streams throughout. The REST capacity beside the two streams is
measured first (closed loop, 2 clients, 20 s), then requests are sent open-loop at half of it.
RSS of the server process (VmRSS) at start, every `--sample` seconds, and after `--idle`
seconds idle; answers by status, streams by how they ended (close code).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
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

MODELS = ROOT / "service" / "models"


def clip(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    x = 0.2 * np.sin(2 * np.pi * (150 + seed % 50) * t) * (1 + np.sin(2 * np.pi * 3 * t))
    x += 0.02 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, x, 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


CLIPS = [clip(s, i) for i, s in enumerate((1, 2, 3, 5, 8, 12, 20))]


async def request(client: httpx.AsyncClient, rng: random.Random, statuses: Counter) -> None:
    body = rng.choice(CLIPS)
    kind = rng.choice(("transcribe", "classify", "openai"))
    try:
        if kind == "openai":
            r = await client.post(
                "/v1/audio/transcriptions",
                files={"file": ("a.wav", body, "audio/wav")},
                data={"model": "whisper-1"},
            )
        else:
            r = await client.post(
                f"/v1/{kind}", content=body, headers={"content-type": "audio/wav"}
            )
        statuses[str(r.status_code)] += 1
    except httpx.HTTPError as exc:
        statuses[type(exc).__name__] += 1


async def stream_forever(port: int, stop: asyncio.Event, statuses: Counter) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    pcm = (np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 200) * 3000).astype(np.int16)
    while not stop.is_set():
        try:
            async with connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
                await ws.send(json.dumps({"type": "start"}))
                for _ in range(20):
                    if stop.is_set():
                        break
                    await ws.send(pcm.tobytes())
                    await asyncio.sleep(1.0)
                await ws.send(json.dumps({"type": "stop"}))
                async for raw in ws:
                    if json.loads(raw)["type"] == "end":
                        break
            statuses["stream_ok"] += 1
        except ConnectionClosed as exc:  # closed by the server: say with which code
            code = exc.rcvd.code if exc.rcvd is not None else "none"
            statuses[f"stream_closed_{code}"] += 1
        except Exception as exc:  # counted, the soak goes on
            statuses[f"stream_{type(exc).__name__}"] += 1


async def run(args: argparse.Namespace) -> dict:
    server_args = ["--device", "cpu", "--model", str(MODELS / "demo-commands")]
    for kv in args.env:
        key, _, value = kv.partition("=")
        os.environ[key] = value
    srv = Server(MODELS / "demo-ctc", server_args, Path(args.out).with_suffix(".server.log"))
    with srv as url:
        assert srv.proc is not None
        pid = srv.proc.pid
        rng = random.Random(0)
        statuses: Counter = Counter()
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            # The two streams are part of the mix: they run while the capacity is measured
            # (each window runs 5.5 s of audio for 1 s of stream: most of a small server).
            stop = asyncio.Event()
            streams = [
                asyncio.create_task(stream_forever(srv.port, stop, statuses)) for _ in range(2)
            ]
            # Capacity of the REST mix beside them: closed loop, 2 clients.
            done, end = 0, time.monotonic() + 20

            async def loop() -> None:
                nonlocal done
                while time.monotonic() < end:
                    await request(client, rng, Counter())
                    done += 1

            started = time.monotonic()
            await asyncio.gather(loop(), loop())
            capacity = done / (time.monotonic() - started)
            rate = capacity / 2
            samples = [(0.0, rss_mb(pid))]
            tasks = []
            t0 = time.monotonic()
            next_sample = t0 + args.sample
            i = 0
            while (now := time.monotonic()) < t0 + args.minutes * 60:
                if now >= next_sample:
                    samples.append((round(now - t0), rss_mb(pid)))
                    next_sample += args.sample
                delay = t0 + i / rate - now
                if delay > 0:
                    await asyncio.sleep(min(delay, 1.0))
                    continue
                tasks.append(asyncio.create_task(request(client, rng, statuses)))
                i += 1
            stop.set()
            await asyncio.gather(*tasks, *streams)
            samples.append((round(time.monotonic() - t0), rss_mb(pid)))
            await asyncio.sleep(args.idle)
            idle = rss_mb(pid)
    return {
        "command": " ".join(sys.argv),
        "env": args.env,
        "capacity_rps": round(capacity, 3),
        "rate_rps": round(rate, 3),
        "requests": i,
        "statuses": dict(statuses),
        "rss_mb": [(t, round(m)) for t, m in samples],
        "rss_idle_mb": round(idle),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--sample", type=float, default=60.0)
    p.add_argument("--idle", type=float, default=60.0)
    p.add_argument("--env", nargs="*", default=[], help="KEY=VALUE for the server process")
    p.add_argument("--out", default="soak.json")
    args = p.parse_args()
    report = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
