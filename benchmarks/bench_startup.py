"""Start-up time and peak memory of `python -m service serve` with no --model (every embedded
default), or with the --model flags given after `--`.

    python -m benchmarks.bench_startup --runs 3
    python -m benchmarks.bench_startup --runs 3 -- --model service/models/demo-ctc

Start-up: from spawning the server to its first 200 from /readyz (imports, loading, warm-up).
Peak RSS: the server's VmHWM (/proc/PID/status) when ready, and again after one request to
each endpoint a served model answers, with the files in examples/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._server import ROOT, free_port

EXAMPLES = ROOT / "examples"
# task -> (endpoint, multipart files) sent once each after ready
REQUESTS = {
    "transcribe": ("/v1/transcribe", {"file": "hello_world.wav"}),
    "classify": ("/v1/classify", {"file": "command_stop.wav"}),
    "embed": ("/v1/verify", {"file1": "voice_a1.wav", "file2": "voice_a2.wav"}),
    "frames": ("/v1/frames", {"file": "speech_and_noise.wav"}),
}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def one_run(extra: list[str], log: Path) -> dict[str, object]:
    port = free_port()
    cmd = [sys.executable, "-m", "service", "serve", "--port", str(port), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, *extra], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        ready_s = time.monotonic() - start
        ready_rss = peak_rss_mib(proc.pid)
        served = httpx.get(url + "/v1/models", timeout=10).json()["data"]
        tasks = sorted({m["task"] for m in served})
        for task in tasks:
            path, files = REQUESTS[task]
            handles = {k: (name, (EXAMPLES / name).read_bytes()) for k, name in files.items()}
            r = httpx.post(url + path, files=handles, timeout=120)
            r.raise_for_status()
        return {
            "ready_s": ready_s,
            "ready_rss": ready_rss,
            "rss": peak_rss_mib(proc.pid),
            "models": [m["id"] for m in served],
            "tasks": tasks,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("serve_args", nargs="*", help="after --: flags for `serve` (e.g. --model X)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(args.serve_args, Path(tmp) / f"serve-{i}.log") for i in range(args.runs)]
    ready = [float(r["ready_s"]) for r in runs]  # type: ignore[arg-type]
    print(f"models: {', '.join(runs[0]['models'])}; requests: {', '.join(runs[0]['tasks'])}")
    print(
        f"ready in {statistics.median(ready):.2f} s median of {len(runs)} "
        f"({', '.join(f'{t:.2f}' for t in ready)}); peak RSS at ready "
        f"{max(float(r['ready_rss']) for r in runs):.0f} MiB, after one request per task "
        f"{max(float(r['rss']) for r in runs):.0f} MiB; load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
