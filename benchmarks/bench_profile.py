"""Where a forward's time goes (float32, or --dtype bfloat16): each stage's share of time and of
FLOPs, and the achieved GFLOP/s against this machine's GEMM peak, measured in the same run.

    python benchmarks/bench_profile.py --config base --seconds 10 60 --out results/profile

Stages are timed by torch.profiler ranges opened and closed by module hooks (the model code is
untouched); FLOPs are counted from the shapes (2 per multiply-add: convolutions, linear layers,
attention's two products), so elementwise work shows up as time without FLOPs. The GEMM peak is
the best of a few (2048 x 2048) @ (2048 x 2048) products in the model's dtype, timed right before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import CONFIGS, RATE, clip, publish, save_checkpoint  # noqa: E402
from benchmarks.bench_engine import _cpu_model  # noqa: E402

GEMM_N = 2048


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="base")
    p.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="profiled forwards per clip")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--out", type=Path, help="report path; writes both .json and .md")
    return p.parse_args(argv)


def gemm_peak(repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of the best of `repeats` large matmuls in `dtype`."""
    a, b = torch.randn(GEMM_N, GEMM_N, dtype=dtype), torch.randn(GEMM_N, GEMM_N, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * GEMM_N**3 / best / 1e9


def stage_modules(model: nn.Module) -> dict[str, list[nn.Module]]:
    """Stage name -> the modules whose forward time it is (a Wav2Vec2ForCTC of ours)."""
    w = model.wav2vec2
    layers = list(w.encoder.layers)
    attentions = [la.attention for la in layers]
    return {
        "conv front end": [w.feature_extractor],
        "feature projection": [w.feature_projection],
        "positional conv": [w.encoder.pos_conv_embed],
        "attention projections": [a.qkv for a in attentions] + [a.out_proj for a in attentions],
        "feed-forward": [la.feed_forward for la in layers],
        "layer norms": [m for la in layers for m in (la.layer_norm, la.final_layer_norm)]
        + [w.encoder.layer_norm],
        "CTC head": [model.lm_head],
    }


def stage_flops(model: nn.Module, samples: int) -> dict[str, float]:
    """Multiply-adds x 2 of each stage for one clip of `samples` samples."""
    c = model.config
    flops = {name: 0.0 for name in stage_modules(model)}
    t = samples
    for i, (dim, k, s) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
        t = (t - k) // s + 1
        flops["conv front end"] += 2 * t * dim * (c.conv_dim[i - 1] if i else 1) * k
    n, d, layers = t, c.hidden_size, c.num_hidden_layers
    flops["feature projection"] = 2 * n * c.conv_dim[-1] * d
    groups = c.num_conv_pos_embedding_groups
    flops["positional conv"] = 2 * n * d * (d // groups) * c.num_conv_pos_embeddings
    flops["attention projections"] = layers * 2 * n * d * 4 * d
    flops["attention kernel"] = layers * 2 * 2 * n * n * d  # q k^T and p v
    flops["feed-forward"] = layers * 2 * 2 * n * d * c.intermediate_size
    flops["CTC head"] = 2 * n * d * (c.vocab_size or 0)
    return flops


def _ranges(modules: dict[str, list[nn.Module]]) -> list:
    """Hooks that open a profiler range named after the stage around each module's forward."""
    handles = []
    for name, mods in modules.items():
        for m in mods:
            state: dict = {}

            def pre(_m, _a, name=name, state=state) -> None:
                state["r"] = torch.profiler.record_function(name)
                state["r"].__enter__()

            def post(_m, _a, _o, state=state) -> None:
                state["r"].__exit__(None, None, None)

            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def _wrap_kernel(model: nn.Module) -> Callable[[], None]:
    """Times the attention kernel (a function, not a module) as its own stage."""
    attentions = [la.attention for la in model.wav2vec2.encoder.layers]
    saved = [a.kernel for a in attentions]

    def timed(kernel):
        def run(*args):
            with torch.profiler.record_function("attention kernel"):
                return kernel(*args)

        return run

    for a, k in zip(attentions, saved):
        a.kernel = timed(k)

    def restore() -> None:
        for a, k in zip(attentions, saved):
            a.kernel = k

    return restore


def profile_clip(loaded, seconds: float, repeats: int) -> dict:
    model = loaded.model
    audio = clip(seconds, 0)
    flops = stage_flops(model, len(audio))
    loaded.forward([audio])  # warm-up
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        loaded.forward([audio])
        walls.append(time.perf_counter() - started)
    handles = _ranges(stage_modules(model))
    restore = _wrap_kernel(model)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            for _ in range(repeats):
                loaded.forward([audio])
            profiled = (time.perf_counter() - started) / repeats
    finally:
        restore()
        for h in handles:
            h.remove()
    events = {e.key: e.cpu_time_total / 1e6 / repeats for e in prof.key_averages()}
    wall = statistics.median(walls)
    stages = {name: events.get(name, 0.0) for name in flops}
    other = "other (normalisation, packing, copy to numpy)"
    stages[other] = max(0.0, profiled - sum(stages.values()))
    total_flops = sum(flops.values())
    # Shares of the profiled forward (ranges add a little time); rates from the unprofiled one.
    return {
        "seconds": seconds,
        "wall_s": wall,
        "profiled_wall_s": profiled,
        "gflops": total_flops / 1e9,
        "gflop_per_s": total_flops / wall / 1e9,
        "stages": {
            name: {
                "time_s": t,
                "time_share": t / profiled,
                "flop_share": flops.get(name, 0.0) / total_flops,
                "gflop_per_s": flops.get(name, 0.0) / t / 1e9 if t else None,
            }
            for name, t in stages.items()
        },
    }


def run(args: argparse.Namespace) -> dict:
    from service.wav2vec2.loading import load_model

    report: dict = {
        "config": args.config,
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "clips": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / args.config, args.config)
        loaded = load_model(str(path), device="cpu", dtype=args.dtype)
        report["dtype"] = args.dtype
        report["gemm_peak_gflop_per_s"] = gemm_peak(dtype=loaded.dtype)
        for seconds in args.seconds:
            report["clips"].append(profile_clip(loaded, seconds, args.repeats))
    return report


def markdown(report: dict) -> str:
    peak = report["gemm_peak_gflop_per_s"]
    lines = [
        f"fp32 profile: `{report['config']}` config, {report['cpu']} "
        f"({report['cpu_capability']}, {report['threads']} thread(s)), torch {report['torch']}; "
        f"GEMM peak ({GEMM_N}^3 fp32 matmul, same run) {peak:.0f} GFLOP/s",
        f"Command: `{report['command']}`",
    ]
    for c in report["clips"]:
        lines += [
            "",
            f"{c['seconds']:.0f} s clip ({c['seconds'] * RATE:.0f} samples): {c['wall_s']:.3f} s, "
            f"{c['gflops']:.1f} GFLOP, {c['gflop_per_s']:.0f} GFLOP/s = "
            f"{100 * c['gflop_per_s'] / peak:.0f}% of the GEMM peak",
            "",
            "| stage | time s | share of time | share of FLOPs | GFLOP/s |",
            "|---|---|---|---|---|",
        ]
        for name, s in c["stages"].items():
            rate = "" if s["gflop_per_s"] is None else f"{s['gflop_per_s']:.0f}"
            lines.append(
                f"| {name} | {s['time_s']:.3f} | {100 * s['time_share']:.1f}% | "
                f"{100 * s['flop_share']:.1f}% | {rate} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report = run(args)
    publish(report, markdown(report), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
