"""Our engine against transformers on the same random weights, interleaved in one process.

    python benchmarks/bench_engine.py --config base --dtype float32 --out results/engine.json
    python benchmarks/bench_engine.py --config base --device cuda --dtype float16 --memory
    python benchmarks/bench_engine.py --config tiny --smoke        # seconds, what CI runs
    python benchmarks/bench_engine.py --arch Hubert --threads 1 --repeats 3

Both sides include per-clip feature normalisation and the copy of the logits to numpy, and
use the same attention implementation (SDPA by default). Timings are interleaved A/B/B/A...
and the median is reported, so a noisy neighbour slows both sides alike. `--memory` also
runs each side alone in a fresh process and reports its peak RSS (and CUDA peak memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_engine.py` from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    ARCHS,
    CONFIGS,
    cases,
    ours,
    publish,
    save_checkpoint,
    sync,
    timed,
    transformers_attention,
    transformers_runner,
)

SIDES = ("ours", "transformers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="base")
    p.add_argument("--arch", choices=ARCHS, default="Wav2Vec2", help="<arch>ForCTC of the family")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--attention", choices=["sdpa", "flash", "eager"], default="sdpa")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per side and case")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both")
    p.add_argument("--cases", default="", help="comma-separated subset of the case names")
    p.add_argument("--smoke", action="store_true", help="short clips, 1 repeat (CI)")
    p.add_argument("--memory", action="store_true", help="peak memory per side, fresh process")
    p.add_argument("--reference-fp32", action="store_true", help="also time our engine in float32")
    p.add_argument(
        "--ours-dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="our engine's dtype, when not --dtype (auto: what a default server picks; "
        "defaults against transformers' --dtype)",
    )
    p.add_argument("--out", type=Path, help="report path; writes both .json and .md")
    p.add_argument("--memory-child", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def environment(args: argparse.Namespace) -> dict:
    import transformers

    env = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if args.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def interleaved(runners: dict, clips: list[np.ndarray], device: str, repeats: int) -> dict:
    """Seconds per call for each side, alternating which side goes first on every repeat."""
    for run in runners.values():  # warm-up: kernels picked, buffers allocated
        run(clips)
    times: dict[str, list[float]] = {side: [] for side in runners}
    order = list(runners)
    for r in range(repeats):
        for side in order if r % 2 == 0 else order[::-1]:
            times[side].append(timed(runners[side], clips, device))
    return times


def summarise(times: dict[str, list[float]], clips: list[np.ndarray]) -> dict:
    audio = sum(len(c) for c in clips) / 16_000
    out: dict = {"clips": len(clips), "audio_seconds": round(audio, 3)}
    for side, ts in times.items():
        med = statistics.median(ts)
        out[side] = {
            "median_s": med,
            "min_s": min(ts),
            "times_s": ts,
            "audio_s_per_s": audio / med,
        }
    if "transformers" in times:
        ours_t, hf_t = times["ours"], times["transformers"]
        out["speedup"] = out["transformers"]["median_s"] / out["ours"]["median_s"]
        # Each repeat times both sides back to back: the median of the per-repeat ratios is
        # the figure least moved by a neighbour's load changing between repeats.
        out["paired_speedup"] = statistics.median(h / o for o, h in zip(ours_t, hf_t))
    if "ours_float32" in times:
        out["vs_float32"] = out["ours_float32"]["median_s"] / out["ours"]["median_s"]
    return out


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Per-clip logits compared over the clip's own frames (transformers pads the rest)."""
    return max(float(np.abs(x - y[: len(x)]).max()) for x, y in zip(a, b))


def memory_child(args: argparse.Namespace) -> None:
    """Runs one side on one case in this fresh process; prints its peak memory as JSON."""
    clips = cases(args.smoke, args.device)[args.cases]
    if args.memory_child == "ours":
        run, _ = ours(args.checkpoint, args.device, args.dtype, args.attention)
    else:
        run = transformers_runner(
            args.checkpoint, args.device, args.dtype, args.attention, args.arch
        )
    sync(args.device)
    loaded = _peak_rss_mib()
    reset = _reset_peak_rss()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run(clips)
    sync(args.device)
    result = {
        "rss_after_load_mib": loaded,  # the peak while importing and loading
        "peak_rss_mib": max(loaded, _peak_rss_mib()),
        "run_peak_rss_mib": _peak_rss_mib() if reset else None,  # the peak while running
        "rss_end_mib": _peak_rss_mib("VmRSS:"),
    }
    if args.device == "cuda":
        result["cuda_peak_run_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["cuda_weights_mib"] = torch.cuda.memory_allocated() / 2**20
    print(json.dumps(result))


def _reset_peak_rss() -> bool:
    """Linux resets VmHWM to the current RSS on `5 > /proc/self/clear_refs`."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib(field: str = "VmHWM:") -> float:
    """This process's peak RSS (VmRSS: the current one). VmHWM, not getrusage: Linux carries
    ru_maxrss over fork and exec, so a child started from a big parent reports its peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_memory(args: argparse.Namespace, checkpoint: Path, case: str) -> dict:
    out = {"case": case}
    for side in SIDES:
        cmd = [sys.executable, __file__, "--memory-child", side, "--checkpoint", str(checkpoint)]
        cmd += ["--cases", case, "--device", args.device, "--dtype", args.dtype]
        cmd += ["--attention", args.attention, "--threads", str(args.threads)]
        cmd += ["--arch", args.arch]
        cmd += ["--smoke"] if args.smoke else []
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            out[side] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        out[side] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def run(args: argparse.Namespace) -> dict:
    all_cases = cases(args.smoke, args.device)
    names = [c for c in args.cases.split(",") if c] or list(all_cases)
    report: dict = {"config": args.config, "dtype": args.dtype, "device": args.device}
    report["arch"] = args.arch
    report["environment"] = environment(args)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / args.config, args.config, arch=args.arch)
        run_ours, kind = ours(
            checkpoint, args.device, args.ours_dtype or args.dtype, args.attention
        )
        runners = {"ours": run_ours}
        report["ours_dtype"] = args.ours_dtype or args.dtype
        report["attention"] = {
            "ours": kind,
            "transformers": transformers_attention(args.arch, args.attention),
        }
        try:
            runners["transformers"] = transformers_runner(
                checkpoint, args.device, args.dtype, args.attention, args.arch
            )
        except Exception as exc:  # e.g. flash_attention_2 without the flash-attn package
            report["attention"]["transformers"] = f"unavailable: {type(exc).__name__}: {exc}"
        if args.reference_fp32 and args.dtype != "float32":
            runners["ours_float32"], _ = ours(checkpoint, args.device, "float32", args.attention)
        report["cases"] = {}
        for name in names:
            clips = all_cases[name]
            print(f"{name}: {len(clips)} clip(s), {args.repeats} repeats", file=sys.stderr)
            result = summarise(interleaved(runners, clips, args.device, args.repeats), clips)
            if len(clips) == 1 and "transformers" in runners:
                result["max_abs_diff"] = max_abs_diff(
                    runners["ours"](clips), runners["transformers"](clips)
                )
            report["cases"][name] = result
        if args.memory:
            report["memory"] = measure_memory(args, checkpoint, names[-1])
    return report


def markdown(report: dict) -> str:
    env = report["environment"]
    hw = env.get("gpu") or f"{env['cpu']} ({env['cores']} cores, {env['threads']} threads)"
    lines = [
        f"Engine vs transformers: {report.get('arch', 'Wav2Vec2')}ForCTC, "
        f"`{report['config']}` config, {report['dtype']} (ours: {report.get('ours_dtype')}) on "
        f"{report['device']}, attention ours={report['attention']['ours']} / "
        f"transformers={report['attention']['transformers']}",
        "",
        f"Hardware: {hw}; torch {env['torch']}, transformers {env['transformers']}",
        f"Command: `{env['command']}`",
        "",
        "| case | audio s | ours median s | transformers median s | ours audio-s/s "
        "| transformers audio-s/s | speedup (medians) | speedup (paired) | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report["cases"].items():
        hf = c.get("transformers", {})
        lines.append(
            f"| {name} | {c['audio_seconds']:.1f} | {c['ours']['median_s']:.3f} | "
            f"{_f(hf.get('median_s'), '.3f')} | {c['ours']['audio_s_per_s']:.2f} | "
            f"{_f(hf.get('audio_s_per_s'), '.2f')} | {_f(c.get('speedup'), '.2f')}x | "
            f"{_f(c.get('paired_speedup'), '.2f')}x | {_f(c.get('max_abs_diff'), '.1e')} |"
        )
    refs = {n: c for n, c in report["cases"].items() if "vs_float32" in c}
    for name, c in refs.items():
        lines.append(
            f"\n{name}: our engine in float32 took {c['ours_float32']['median_s']:.3f} s, so "
            f"{report['dtype']} runs at {c['vs_float32']:.2f}x float32's speed."
        )
    if "memory" in report:
        mem = report["memory"]
        lines += ["", f"Peak memory, each side alone in a fresh process, case {mem['case']}:", ""]
        lines += [
            "| side | peak RSS loading MiB | peak RSS running MiB | RSS at end MiB "
            "| CUDA peak MiB |",
            "|---|---|---|---|---|",
        ]
        for side in SIDES:
            m = mem.get(side, {})
            if "error" in m:
                lines.append(f"| {side} | error: {m['error']} | | | |")
                continue
            lines.append(
                f"| {side} | {_f(m.get('rss_after_load_mib'), '.0f')} | "
                f"{_f(m.get('run_peak_rss_mib'), '.0f')} | {_f(m.get('rss_end_mib'), '.0f')} | "
                f"{_f(m.get('cuda_peak_run_mib'), '.0f')} |"
            )
    return "\n".join(lines) + "\n"


def _f(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.repeats = min(args.repeats, 1)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return 0
    report = run(args)
    publish(report, markdown(report), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
