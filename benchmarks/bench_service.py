"""Service overhead and dynamic batching, measured with the loadtest library on 127.0.0.1.

    python benchmarks/bench_service.py --out results/service.json          # base-sized model
    python benchmarks/bench_service.py --model service/models/demo-ctc --duration 20
    python benchmarks/bench_service.py --smoke                              # tiny, seconds

1. Engine alone: the same clips through LoadedModel.forward (what Engine.run_batch calls) in
   batches of the server's size, sorted by length (the best a batcher can do), in this
   process, while the server idles.
2. Server at saturation: closed loop with 2 x max-batch requests in flight.
   Overhead ratio = server audio-s/s / engine audio-s/s (goal >= 0.9).
3. Latency at 50% of saturation: open loop, Poisson arrivals at half the saturated rate.
4. Dynamic batching off (--max-batch-size 1): a second server, the same saturation run and
   the same open-loop load (same rate, same seed) as the batching server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_service.py` from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks._common import publish, save_checkpoint  # noqa: E402
from benchmarks._server import Server  # noqa: E402
from loadtest import LoadConfig, audio, markdown, run_async  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="checkpoint dir (default: a random base-sized CTC model)")
    p.add_argument("--config", default="base", help="size of the random model: base|large|tiny")
    p.add_argument("--lengths", default="uniform:2:10", help="loadtest length spec")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--duration", type=float, default=30.0, help="seconds per load run")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny model, 3 s runs (CI)")
    p.add_argument("--out", type=Path, help="report path; writes .json and .md")
    return p.parse_args(argv)


def engine_throughput(model: Path, clips: list[audio.Clip], batch: int, passes: int) -> dict:
    """Audio-s/s of the batch forward over the clips, length-sorted batches, best of passes."""
    from service.wav2vec2.loading import load_model

    loaded = load_model(str(model), device="cpu", dtype="float32")
    pcm = sorted((c.pcm for c in clips), key=len)
    loaded.forward(pcm[:2])  # warm-up: buffers and kernels before the timed passes
    seconds = sum(len(x) for x in pcm) / audio.RATE
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        for i in range(0, len(pcm), batch):
            loaded.forward(pcm[i : i + batch])
        times.append(time.perf_counter() - started)
    del loaded
    gc.collect()
    best = min(times)
    return {"audio_seconds": seconds, "times_s": times, "audio_s_per_s": seconds / best}


async def load(url: str, clips: list[audio.Clip], **kw) -> dict:
    rep = await run_async(LoadConfig(url=url, progress=False, timeout=300, **kw), clips)
    rep.pop("requests")  # per-request rows are for plots; the benchmark keeps the summaries
    return rep


def summary_row(name: str, o: dict) -> dict:
    t = o["latency"]["total"]
    return {
        "run": name,
        "sent": o["sent"],
        "ok": o["ok"],
        "errors": sum(o["errors"].values()),
        "rps": o["throughput_rps"],
        "audio_s_per_s": o["audio_seconds_per_second"],
        "p50": t["p50"],
        "p90": t["p90"],
        "p99": t["p99"],
        "queue_p50": o["latency"]["queue"]["p50"],
        "inference_p50": o["latency"]["inference"]["p50"],
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.config, args.duration, args.clips, args.lengths = "tiny", 3.0, 4, "uniform:1:3"
    clips = audio.generate("noise", args.lengths, args.clips, seed=0)
    rows, rep = [], {"clips": len(clips), "clip_audio_seconds": sum(c.seconds for c in clips)}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else save_checkpoint(Path(tmp) / "m", args.config)
        rep["model"] = str(args.model or f"random {args.config}-sized Wav2Vec2ForCTC")
        batched = ["--max-batch-size", str(args.max_batch_size)]
        with Server(model, batched, log=Path(tmp) / "batched.log") as url:
            engine_before = engine_throughput(model, clips, args.max_batch_size, 2)
            sat = asyncio.run(
                load(
                    url,
                    clips,
                    mode="closed",
                    duration=args.duration,
                    concurrency=2 * args.max_batch_size,
                )
            )
            engine_after = engine_throughput(model, clips, args.max_batch_size, 2)
            sat_rps = sat["overall"]["throughput_rps"]
            half = asyncio.run(
                load(
                    url,
                    clips,
                    mode="open",
                    rate=max(sat_rps / 2, 0.1),
                    duration=args.duration,
                    arrival="poisson",
                    seed=1,
                )
            )
        engine_rate = statistics.fmean(
            [engine_before["audio_s_per_s"], engine_after["audio_s_per_s"]]
        )
        rep["engine"] = {
            "before": engine_before,
            "after": engine_after,
            "audio_s_per_s": engine_rate,
        }
        rep["overhead_ratio"] = sat["overall"]["audio_seconds_per_second"] / engine_rate
        rep["saturation_rps"] = sat_rps
        rows += [
            summary_row("batching on: saturation (closed loop)", sat["overall"]),
            summary_row("batching on: 50% of saturation (open, Poisson)", half["overall"]),
        ]
        with Server(model, ["--max-batch-size", "1"], log=Path(tmp) / "single.log") as url:
            sat1 = asyncio.run(
                load(
                    url,
                    clips,
                    mode="closed",
                    duration=args.duration,
                    concurrency=2 * args.max_batch_size,
                )
            )
            half1 = asyncio.run(
                load(
                    url,
                    clips,
                    mode="open",
                    rate=max(sat_rps / 2, 0.1),
                    duration=args.duration,
                    arrival="poisson",
                    seed=1,
                )
            )
        rows += [
            summary_row("batching off: saturation (closed loop)", sat1["overall"]),
            summary_row("batching off: same open load as above", half1["overall"]),
        ]
    rep["runs"] = rows
    rep["environment"] = {
        "torch": torch.__version__,
        "threads": args.threads,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    rep["markdown_batching_on"] = markdown({"config": sat["config"], "overall": sat["overall"]})
    return rep


def to_markdown(rep: dict) -> str:
    e = rep["engine"]
    lines = [
        f"Service benchmark: {rep['model']}, {rep['clips']} clips "
        f"({rep['clip_audio_seconds']:.0f} s of audio), command `{rep['environment']['command']}`",
        "",
        f"Engine alone: {e['audio_s_per_s']:.2f} audio-s/s "
        f"(before {e['before']['audio_s_per_s']:.2f}, after {e['after']['audio_s_per_s']:.2f}); "
        "server at saturation / engine = "
        f"**{rep['overhead_ratio']:.2f}** (goal >= 0.9)",
        "",
        "| run | sent | ok | errors | req/s | audio-s/s | p50 s | p90 s | p99 s | queue p50 s "
        "| inference p50 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["runs"]:
        lines.append(
            f"| {r['run']} | {r['sent']} | {r['ok']} | {r['errors']} | {r['rps']:.2f} "
            f"| {r['audio_s_per_s']:.2f} | {_f(r['p50'])} | {_f(r['p90'])} | {_f(r['p99'])} "
            f"| {_f(r['queue_p50'])} | {_f(r['inference_p50'])} |"
        )
    return "\n".join(lines) + "\n"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rep = run(args)
    publish(rep, to_markdown(rep), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
