"""WavLM's biased attention alone: per-clip SDPA with the gated bias as a float mask (the
default) against FlexAttention over the packed batch (`service.wav2vec2.wavlm.use_flex`).

    python benchmarks/bench_wavlm_flex.py                 # base sizes, the mixed batch, CPU
    python benchmarks/bench_wavlm_flex.py --device cuda

Random q/k/v, bias table and gate at base sizes (12 heads x 64) over the frame counts of
bench_engine's mixed batch. Reports the first FlexAttention call (it compiles) apart, then the
median of --repeats calls of each, and their max abs difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import BATCH_SECONDS, sync  # noqa: E402
from service.wav2vec2.attention import biased_per_clip  # noqa: E402
from service.wav2vec2.packed import Frames  # noqa: E402
from service.wav2vec2.wavlm import flex_biased  # noqa: E402

FRAMES_PER_SECOND = 50  # wav2vec2's 320-sample frame step at 16 kHz


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lengths = [int(s * FRAMES_PER_SECOND) - 1 for s in BATCH_SECONDS]
    heads, dim, n, longest = 12, 64, sum(lengths), max(lengths)
    q, k, v = (torch.randn(n, heads, dim, device=args.device) for _ in range(3))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    frames = Frames(lengths, cu.to(args.device), longest)
    table = torch.randn(heads, 2 * longest - 1, device=args.device)
    gate = torch.rand(n, heads, device=args.device) + 0.5

    def per_clip() -> torch.Tensor:
        bias = []
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
            pos = torch.arange(b - a, device=args.device)
            clip = table[:, pos[None, :] - pos[:, None] + longest - 1]
            bias.append(gate[a:b].T[:, :, None] * clip)
        return biased_per_clip(q, k, v, frames.cu, bias)

    def flex() -> torch.Tensor:
        return flex_biased(q, k, v, frames, table, gate)

    with torch.inference_mode():
        started = time.perf_counter()
        diff = (flex() - per_clip()).abs().max().item()
        first = time.perf_counter() - started
        print(f"first FlexAttention call (compiles) + one per-clip: {first:.1f} s")
        print(f"frames {lengths}, max abs diff {diff:.1e}")
        for name, fn in (("per-clip SDPA", per_clip), ("FlexAttention", flex)):
            times = []
            for _ in range(args.repeats):
                sync(args.device)
                started = time.perf_counter()
                fn()
                sync(args.device)
                times.append(time.perf_counter() - started)
            print(f"{name}: median {statistics.median(times):.4f} s of {args.repeats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
