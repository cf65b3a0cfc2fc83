"""Long uploads through a real server: time, status and peak memory for 10 and 60 minutes.

    python benchmarks/bench_long.py [--minutes 10 60] [--decoder greedy] [--out long.json]

Each length runs on a fresh `serve` of demo-ctc alone, so the process's peak RSS (VmHWM) is
that request's. The audio is a 16 kHz mono FLAC of a pitched tone in noise (the compute and
the memory do not depend on what is said); POST /v1/transcribe with `--decoder` (default:
the model's, beam+LM).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._server import Server  # noqa: E402

MODEL = ROOT / "service" / "models" / "demo-ctc"


def flac(minutes: float) -> bytes:
    n = int(minutes * 60 * 16_000)
    t = np.arange(n, dtype=np.float32) / 16_000
    x = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    x += 0.005 * np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16_000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    raise KeyError(key)


def one(minutes: float, log: Path, decoder: str | None) -> dict:
    body = flac(minutes)
    server = Server(MODEL, ["--device", "cpu"], log)
    with server as url:
        assert server.proc is not None
        pid = server.proc.pid
        ready_rss, ready_peak = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
        started = time.perf_counter()
        r = httpx.post(
            url + "/v1/transcribe",
            content=body,
            headers={"content-type": "audio/flac"},
            params={"decoder": decoder} if decoder else None,
            timeout=None,
        )
        wall = time.perf_counter() - started
        peak = status_kb(pid, "VmHWM")
    answer = r.json()
    return {
        "minutes": minutes,
        "decoder": decoder or "default",
        "upload_mb": round(len(body) / 2**20, 1),
        "status": r.status_code,
        "error": answer.get("error"),
        "duration": answer.get("duration"),
        "wall_s": round(wall, 1),
        "inference_s": float(r.headers.get("x-inference-time", "nan")),
        "queue_s": float(r.headers.get("x-queue-time", "nan")),
        "decode_s": float(r.headers.get("x-decode-time", "nan")),
        "rss_ready_mb": round(ready_rss / 1024),
        "peak_ready_mb": round(ready_peak / 1024),
        "peak_mb": round(peak / 1024),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    p.add_argument("--decoder", choices=["greedy", "beam"])
    p.add_argument("--out", default="long.json")
    args = p.parse_args()
    out = Path(args.out)
    rows = [one(m, out.with_suffix(f".{m:g}min.log"), args.decoder) for m in args.minutes]
    report = {"command": " ".join(sys.argv), "runs": rows}
    report["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
