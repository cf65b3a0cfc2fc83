"""Streaming compute with and without front-end reuse (service/wav2vec2/resume.py).

    python benchmarks/bench_stream_reuse.py --threads 1 --repeats 5 --out results/reuse

One stream of `--seconds` of audio, fed in 100 ms frames through service.streaming.Stream
with the service's default windows (1 s chunks, 4 s left context, 0.5 s lookahead), one
window at a time, in this process: forward-pass seconds per second of audio with every
window computing its whole front end, and with the frames earlier windows computed reused,
passes alternating, paired medians. One core sustains 1 / (that ratio) real-time streams of
compute (one thread, no batching across streams). Models: a random CTC of --config's size
with the large checkpoints' layer-norm front end, and demo-ctc; both with do_normalize
false, which reuse needs (demo-ctc is served with it true, so its figures are what a
checkpoint of its shape trained without it would get, not what the default serves).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import clip, publish, save_checkpoint  # noqa: E402
from service.streaming import Stream, windowing_for  # noqa: E402
from service.wav2vec2.loading import LoadedModel, load_model  # noqa: E402
from service.wav2vec2.resume import FrontEndCache  # noqa: E402

DEMO = ROOT / "service" / "models" / "demo-ctc"
FRAME = 1600  # samples per client frame (100 ms)
# The large checkpoints' front end (layer norm, conv bias) on the chosen size: a local one.
LAYER_NORM = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)


def unnormalised(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    f = dst / "preprocessor_config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "do_normalize": False}))
    return dst


async def stream(loaded: LoadedModel, x: np.ndarray, reuse: bool) -> tuple[str, float]:
    """Finals joined by spaces, and the forward-pass seconds spent."""
    w = windowing_for(
        loaded, chunk=1.0, left=4.0, lookahead=0.5, pause=0.5, max_segment=20.0, parallel=1
    )
    cache, spent = FrontEndCache(), 0.0

    async def infer(window: np.ndarray, start: int) -> np.ndarray:
        nonlocal spent
        t = time.perf_counter()
        (out,) = loaded.forward([window], resume=[(start, cache) if reuse else None])
        spent += time.perf_counter() - t
        return out

    assert loaded.tokenizer is not None
    s = Stream(w, loaded.tokenizer, loaded.frame_seconds, infer, interim=False)
    finals = []
    for i in range(0, len(x), FRAME):
        s.feed(x[i : i + FRAME])
        finals += [m.text for m in await s.advance() if m.type == "final"]
    finals += [m.text for m in await s.finish() if m.type == "final"]
    return " ".join(finals), spent


def measure(name: str, path: Path, x: np.ndarray, repeats: int) -> dict:
    loaded = load_model(str(path), device="cpu", dtype="float32")
    assert loaded.front_end_reusable
    seconds = len(x) / loaded.sampling_rate
    asyncio.run(stream(loaded, x[: 5 * FRAME * 10], True))  # warm-up
    full, reused, texts = [], [], set()
    for _ in range(repeats):
        for reuse, into in ((False, full), (True, reused)):
            text, spent = asyncio.run(stream(loaded, x, reuse))
            into.append(spent / seconds)
            texts.add(text)
    saved = statistics.median(1 - r / f for f, r in zip(full, reused))
    return dict(
        model=name,
        audio_seconds=seconds,
        rtf_full=statistics.median(full),
        rtf_reuse=statistics.median(reused),
        saved=saved,
        streams_per_core_full=1 / statistics.median(full),
        streams_per_core_reuse=1 / statistics.median(reused),
        finals_equal=len(texts) == 1,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", default="base", help="size (benchmarks/_common.py CONFIGS)")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = clip(args.seconds, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "random", args.config, **LAYER_NORM)
        models = [(f"random {args.config}", unnormalised(ckpt, Path(tmp) / "random-raw"))]
        if not args.skip_demo:
            models.append(("demo-ctc", unnormalised(DEMO, Path(tmp) / "demo")))
        for name, path in models:
            rows.append(measure(name, path, x, args.repeats))
            print(rows[-1], flush=True)
    lines = [
        f"Stream of {args.seconds:g} s, windows 1 s / 4 s left / 0.5 s lookahead, "
        f"{args.threads} thread(s), paired medians of {args.repeats}, CPU "
        f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}",
        "",
        "| model | compute / audio s, whole windows | with reuse | saved | real-time streams "
        "per core, before -> after | finals equal |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['rtf_full']:.3f} | {r['rtf_reuse']:.3f} | {r['saved']:.0%} | "
            f"{r['streams_per_core_full']:.1f} -> {r['streams_per_core_reuse']:.1f} | "
            f"{r['finals_equal']} |"
        )
    publish(dict(rows=rows, args=vars(args) | {"out": str(args.out)}), "\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
