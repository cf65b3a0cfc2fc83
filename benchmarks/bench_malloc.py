"""What the server's malloc settings (service/allocator.py) cost in forward passes, paired.

    python benchmarks/bench_malloc.py [--pairs 3] [--rounds 5]
                                      [--env MALLOC_MMAP_THRESHOLD_=1048576]

Each side runs in a fresh process (the settings are process-wide): demo-ctc, a warm-up, then
`--rounds` rounds of forward passes over clips of 1-20 s in batches as the server forms them;
CPU seconds (user + sys: page faults of fresh mappings are sys time) and wall seconds per round,
and RSS after. Sides: glibc's defaults, serve's settings (allocator.configure) and, with
`--env`, glibc's defaults under that environment (an alternative); their order is reversed
every other repeat, so a noisy neighbour slows every side alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHILD = """
import json, resource, sys, time
import numpy as np, torch
from service import allocator
if sys.argv[1] == "serve":
    allocator.configure()
from service.wav2vec2.loading import load_model
torch.set_num_threads(1)
model = load_model(sys.argv[2], device="cpu", dtype="float32")
rng = np.random.default_rng(0)
clips = [rng.standard_normal(int(s * 16_000)).astype(np.float32) * 0.1 for s in
         (1, 2, 3, 5, 8, 12, 20, 20, 12, 8, 5, 3, 2, 1)]
batches = [clips[i : i + 4] for i in range(0, len(clips), 4)]
model.forward(batches[0])
cpu, wall = [], []
for _ in range(int(sys.argv[3])):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for b in batches:
        model.forward(b)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    wall.append(time.perf_counter() - t0)
    cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
rss = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
print(json.dumps({"cpu": cpu, "wall": wall, "rss_mb": rss}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--env", nargs="*", default=[], help="KEY=VALUE: a third side")
    args = p.parse_args()
    model = str(ROOT / "service" / "models" / "demo-ctc")
    sides = {"default": {}, "serve": {}}
    if args.env:
        sides[" ".join(args.env)] = dict(kv.split("=", 1) for kv in args.env)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for i in range(args.pairs):
        for side in list(sides)[:: 1 if i % 2 == 0 else -1]:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, side, model, str(args.rounds)],
                cwd=ROOT,
                env={**os.environ, **sides[side]},
                capture_output=True,
                text=True,
                check=True,
            )
            runs[side].append(json.loads(out.stdout.splitlines()[-1]))
    report = {}
    for side, rs in runs.items():
        report[side] = {
            "cpu_s_per_round": round(statistics.median(c for r in rs for c in r["cpu"]), 3),
            "wall_s_per_round": round(statistics.median(w for r in rs for w in r["wall"]), 3),
            "rss_mb": round(statistics.median(r["rss_mb"] for r in rs)),
        }
    report["load_average"] = list(Path("/proc/loadavg").read_text().split()[:3])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
