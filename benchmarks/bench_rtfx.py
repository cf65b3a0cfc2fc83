"""RTFx as the Open ASR Leaderboard measures it: our engine against transformers, one process.

    python benchmarks/bench_rtfx.py --device cuda --config large           # fp16 + bf16 vs HF bf16
    python benchmarks/bench_rtfx.py --device cuda --config base --clips 2620
    python benchmarks/bench_rtfx.py --device cpu --config base --clips 40  # fp32 vs HF fp32
    python benchmarks/bench_rtfx.py --config tiny --smoke                  # seconds (the test)

RTFx = total audio seconds / total wall seconds, over a LibriSpeech-like set of clip lengths
(test-clean's shape: log-normal around 6 s, 1.3 to 35 s; seeded), with the decode to text
included and a warm-up pass excluded (the leaderboard's run_eval.py times `model.generate` plus
`batch_decode` per batch, after warm-up batches). Sides:

- transformers: the leaderboard's CTC recipe, bf16 (float32 on CPU), SDPA, padded batches of 64
  in dataset order, the feature extractor padding and normalising, `batch_decode` of the argmax;
- ours: `LoadedModel.forward` (packed varlen attention, no padding) over cost-based batches
  (service/cost.py fill_batches, --max-batch-samples as the server's setting), fp16 and bf16 on
  CUDA, float32 on CPU, our tokenizer's greedy decode.

Each timed pass runs every clip once; passes alternate sides and the median RTFx is reported,
with each side's peak device memory (CUDA) or peak RSS growth (CPU) during its passes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import CONFIGS, DTYPES, RATE, clip, publish, save_checkpoint, sync  # noqa: E402
from benchmarks.bench_engine import _peak_rss_mib, _reset_peak_rss, environment  # noqa: E402

# LibriSpeech test-clean: 2620 utterances, 5.4 h, 1.3-35 s, median ~6 s (log-normal fit).
LIBRISPEECH_CLIPS = 2620
MEDIAN_S, SIGMA, MIN_S, MAX_S = 6.0, 0.65, 1.3, 35.0
HF_BATCH = 64  # the leaderboard's batch size for CTC models

Transcriber = Callable[[list[np.ndarray]], list[str]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="base")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--clips", type=int, default=LIBRISPEECH_CLIPS, help="clips in the set")
    p.add_argument("--passes", type=int, default=3, help="timed passes per side")
    p.add_argument("--max-batch-samples", type=int, default=RATE * 240 * 16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny set, one pass (the test)")
    p.add_argument("--out", type=Path, help="report path; writes both .json and .md")
    return p.parse_args(argv)


def lengths(n: int, seed: int = 0) -> list[float]:
    """n clip durations in seconds with LibriSpeech test-clean's shape."""
    rng = np.random.default_rng(seed)
    seconds = np.exp(rng.normal(np.log(MEDIAN_S), SIGMA, n)).clip(MIN_S, MAX_S)
    return [round(float(s), 3) for s in seconds]


def ours(path: Path, device: str, dtype: str, max_batch_samples: int) -> Transcriber:
    from service.cost import fill_batches
    from service.wav2vec2.loading import load_model

    loaded = load_model(str(path), device=device, dtype=dtype)
    tokenizer = loaded.tokenizer
    assert tokenizer is not None

    def run(clips: list[np.ndarray]) -> list[str]:
        texts = [""] * len(clips)
        for batch in fill_batches([len(c) for c in clips], max_batch_samples):
            for i, logits in zip(batch, loaded.forward([clips[i] for i in batch])):
                texts[i] = tokenizer.decode(logits.argmax(-1).tolist()).text
        return texts

    return run


def transformers_side(path: Path, device: str, dtype: str) -> Transcriber:
    import transformers

    model = transformers.Wav2Vec2ForCTC.from_pretrained(path, attn_implementation="sdpa")
    model = model.to(device=device, dtype=DTYPES[dtype]).eval()
    processor = transformers.Wav2Vec2Processor.from_pretrained(path)

    def run(clips: list[np.ndarray]) -> list[str]:
        texts: list[str] = []
        for start in range(0, len(clips), HF_BATCH):
            batch = processor(
                clips[start : start + HF_BATCH],
                sampling_rate=RATE,
                padding=True,
                return_tensors="pt",
                return_attention_mask=True,
            )
            kwargs = {"input_values": batch.input_values.to(device, DTYPES[dtype])}
            if processor.feature_extractor.return_attention_mask:
                kwargs["attention_mask"] = batch.attention_mask.to(device)
            with torch.inference_mode():
                ids = model(**kwargs).logits.argmax(-1)
            texts += processor.batch_decode(ids.cpu())
        return texts

    return run


def sides(args: argparse.Namespace, path: Path) -> dict[str, Transcriber]:
    if args.device == "cuda":
        return {
            "ours_float16": ours(path, "cuda", "float16", args.max_batch_samples),
            "ours_bfloat16": ours(path, "cuda", "bfloat16", args.max_batch_samples),
            "transformers_bfloat16": transformers_side(path, "cuda", "bfloat16"),
        }
    return {
        "ours_float32": ours(path, "cpu", "float32", args.max_batch_samples),
        "transformers_float32": transformers_side(path, "cpu", "float32"),
    }


def timed_pass(run: Transcriber, clips: list[np.ndarray], device: str) -> tuple[float, float]:
    """Wall seconds for one pass over the set, and the pass's peak memory in MiB."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss_reset = _reset_peak_rss()
    sync(device)
    started = time.perf_counter()
    texts = run(clips)
    sync(device)
    wall = time.perf_counter() - started
    assert len(texts) == len(clips)
    if device == "cuda":
        return wall, torch.cuda.max_memory_allocated() / 2**20
    return wall, _peak_rss_mib() if rss_reset else float("nan")


def run(args: argparse.Namespace) -> dict:
    durations = lengths(args.clips)
    clips = [clip(s, i) for i, s in enumerate(durations)]
    audio = sum(durations)
    report: dict = {
        "config": args.config,
        "device": args.device,
        "clips": len(clips),
        "audio_seconds": round(audio, 1),
        "environment": environment(args),
        "sides": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / args.config, args.config)
        runners = sides(args, path)
        warm = clips[: min(len(clips), HF_BATCH)]
        for runner in runners.values():  # warm-up, excluded: kernels, allocator, autotuning
            runner(warm)
        walls: dict[str, list[float]] = {name: [] for name in runners}
        peaks: dict[str, float] = {name: 0.0 for name in runners}
        order = list(runners)
        for p in range(args.passes):
            for name in order if p % 2 == 0 else order[::-1]:
                wall, peak = timed_pass(runners[name], clips, args.device)
                walls[name].append(wall)
                peaks[name] = max(peaks[name], peak)
    for name, ws in walls.items():
        report["sides"][name] = {
            "wall_s": ws,
            "rtfx": audio / statistics.median(ws),
            "peak_memory_mib": peaks[name],
        }
    hf = [s for s in report["sides"] if s.startswith("transformers")][0]
    for side in report["sides"].values():
        side["vs_transformers"] = side["rtfx"] / report["sides"][hf]["rtfx"]
    return report


def markdown(report: dict) -> str:
    env = report["environment"]
    hw = env.get("gpu") or f"{env['cpu']} ({env['threads']} threads)"
    memory = "CUDA peak allocated" if report["device"] == "cuda" else "peak RSS"
    lines = [
        f"RTFx (Open ASR Leaderboard method): `{report['config']}` config on {hw}, "
        f"{report['clips']} LibriSpeech-like clips ({report['audio_seconds']:.0f} s of audio); "
        f"torch {env['torch']}, transformers {env['transformers']}",
        f"Command: `{env['command']}`",
        "",
        f"| side | RTFx (median pass) | vs transformers | {memory} MiB |",
        "|---|---|---|---|",
    ]
    for name, s in report["sides"].items():
        lines.append(
            f"| {name} | {s['rtfx']:.1f} | {s['vs_transformers']:.2f}x | "
            f"{s['peak_memory_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.clips, args.passes = min(args.clips, 6), 1
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    report = run(args)
    publish(report, markdown(report), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
