"""Streaming (WS /v1/stream): window geometry against accuracy, and live latency under REST load.

    python benchmarks/bench_stream.py --out results/stream.json        # demo-ctc, ~5 min on 2 cores
    python benchmarks/bench_stream.py --skip-server                    # the sweep only

1. Sweep, in this process: the sentences training/sentences.py keeps out of the corpus, spoken
   by espeak-ng with 0.8 s gaps, streamed through service.streaming.Stream in 100 ms frames with
   each window geometry; finals vs the offline (whole-clip) transcript of the same model, and vs
   the reference text. Compute x = (left + chunk + lookahead) / chunk forward-pass audio per
   second of stream.
2. Server (a real `serve` on 127.0.0.1, default windows): 2 real-time streams of that speech,
   alone and while 4 closed-loop clients keep sending 30 s clips to /v1/transcribe. The final
   lag is the time from the last sample of a final's segment being sent to the final arriving.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_stream.py` from anywhere
    sys.path.insert(0, str(ROOT))

from service.streaming import Stream, windowing_for  # noqa: E402
from service.wav2vec2.loading import LoadedModel, load_model  # noqa: E402
from training.data import SAMPLE_RATE, espeak  # noqa: E402
from training.sentences import RESERVED  # noqa: E402
from training.text import edit_distance  # noqa: E402

DEMO = ROOT / "service" / "models" / "demo-ctc"
VOICES = [("en-us", "m2"), ("en", "f3"), ("en-gb-x-rp", ""), ("en-us", "f5")]
GAP_SECONDS = 0.8
FRAME_SECONDS = 0.1  # what a browser or the load generator sends per WebSocket frame
# (chunk, left, lookahead) in seconds; the service default is 1.0 / 4 / 0.5.
GRID = [
    (1.0, 0.0, 0.0),
    (1.0, 2.0, 0.0),
    (1.0, 2.0, 0.5),
    (1.0, 4.0, 0.0),
    (1.0, 4.0, 0.5),
    (1.0, 8.0, 1.0),
    (0.5, 4.0, 0.5),
    (2.0, 4.0, 0.5),
]
DEFAULT = (1.0, 4.0, 0.5)


def speech() -> tuple[np.ndarray, str]:
    """The reserved sentences, one voice each in turn, 0.8 s of silence between them."""
    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE), np.float32)
    parts, texts = [gap], []
    for i, text in enumerate(sorted(RESERVED)):
        voice, variant = VOICES[i % len(VOICES)]
        parts += [espeak(text, voice, variant, 150 + 5 * (i % 3), 50), gap]
        texts.append(text.upper())
    return np.concatenate(parts).astype(np.float32), " ".join(texts)


def rates(ref: str, hyp: str) -> tuple[float, float]:
    """(WER, CER) of hyp against ref, whitespace runs ignored."""
    r, h = ref.split(), hyp.split()
    wer = edit_distance(r, h) / max(1, len(r))
    cer = edit_distance(" ".join(r), " ".join(h)) / max(1, len(" ".join(r)))
    return wer, cer


def offline(loaded: LoadedModel, x: np.ndarray) -> str:
    assert loaded.tokenizer is not None
    return loaded.tokenizer.decode(loaded.forward([x])[0].argmax(-1).tolist()).text


async def streamed(
    loaded: LoadedModel, x: np.ndarray, geometry: tuple[float, float, float]
) -> tuple[str, float]:
    """Finals joined by spaces, and forward-pass seconds spent."""
    chunk, left, lookahead = geometry
    w = windowing_for(
        loaded, chunk=chunk, left=left, lookahead=lookahead, pause=0.5, max_segment=20.0, parallel=1
    )
    spent = 0.0

    async def infer(window: np.ndarray, start: int) -> np.ndarray:
        nonlocal spent
        t = time.perf_counter()
        logits = loaded.forward([window])[0]
        spent += time.perf_counter() - t
        return logits

    assert loaded.tokenizer is not None
    stream = Stream(w, loaded.tokenizer, loaded.frame_seconds, infer, interim=False)
    finals: list[str] = []
    step = int(FRAME_SECONDS * SAMPLE_RATE)
    for i in range(0, len(x), step):
        stream.feed(x[i : i + step])
        finals += [m.text for m in await stream.advance() if m.type == "final"]
    finals += [m.text for m in await stream.finish() if m.type == "final"]
    return " ".join(finals), spent


def sweep(model: Path, x: np.ndarray, ref: str) -> dict:
    loaded = load_model(str(model), device="cpu", dtype="float32")
    whole = offline(loaded, x)
    rows = []
    for geometry in GRID:
        text, spent = asyncio.run(streamed(loaded, x, geometry))
        chunk, left, lookahead = geometry
        wer_o, cer_o = rates(whole, text)
        wer_r, cer_r = rates(ref, text)
        rows.append(
            dict(
                chunk=chunk,
                left=left,
                lookahead=lookahead,
                compute_x=(left + chunk + lookahead) / chunk,
                wer_vs_offline=wer_o,
                cer_vs_offline=cer_o,
                wer=wer_r,
                cer=cer_r,
                cpu_rtf=spent / (len(x) / SAMPLE_RATE),
                text=text,
            )
        )
        print(
            f"{geometry}: vs offline WER {wer_o:.3f} CER {cer_o:.3f}; vs reference WER "
            f"{wer_r:.3f} CER {cer_r:.3f}",
            flush=True,
        )
    return dict(offline=dict(zip(("wer", "cer"), rates(ref, whole)), text=whole), rows=rows)


def server_latency(model: Path, x: np.ndarray, work: Path) -> dict:
    from benchmarks._server import Server
    from loadtest import Clip, LoadConfig, run_async
    from loadtest.audio import wav_bytes

    seconds = x.size / SAMPLE_RATE
    speech_clip = Clip("speech", wav_bytes(x), "audio/wav", seconds, pcm=x)
    long = np.tile(x, 2)[: 30 * SAMPLE_RATE]
    rest_clip = Clip("rest30", wav_bytes(long), "audio/wav", long.size / SAMPLE_RATE)
    out: dict[str, dict] = {}
    with Server(model, ["--device", "cpu"], work / "server.log") as url:
        # 2 streams at once, one each (duration only gates their start).
        streams = LoadConfig(
            url=url,
            mode="stream",
            concurrency=2,
            max_requests=2,
            duration=1,
            pace=1.0,
            timeout=300,
            progress=False,
        )
        flood = LoadConfig(
            url=url, mode="closed", concurrency=4, duration=seconds + 2, timeout=300, progress=False
        )
        for name, loaded in (("alone", False), ("rest_flood", True)):

            async def both(loaded: bool = loaded) -> list[dict]:
                runs = [run_async(streams, [speech_clip])]
                if loaded:
                    runs.append(run_async(flood, [rest_clip]))
                return list(await asyncio.gather(*runs))

            reps = asyncio.run(both())
            s, stream = reps[0]["overall"], reps[0]["overall"].get("stream", {})
            r = reps[1]["overall"] if loaded else {}
            out[name] = dict(
                streams_ok=s["ok"],
                errors=s["errors"],
                final_lag=stream.get("final_lag"),
                first_partial=stream.get("first_partial"),
                rest_ok=r.get("ok"),
                rest_latency=r.get("latency", {}).get("total"),
            )
            print(name, json.dumps(out[name]), flush=True)
    return out


def to_markdown(rep: dict) -> str:
    lines = [
        f"Offline (whole clip) vs reference: WER {rep['sweep']['offline']['wer']:.3f}, "
        f"CER {rep['sweep']['offline']['cer']:.3f}",
        "",
        "| chunk s | left s | lookahead s | compute x | WER vs offline | CER vs offline "
        "| WER vs text | CER vs text |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["sweep"]["rows"]:
        bold = "**" if (r["chunk"], r["left"], r["lookahead"]) == DEFAULT else ""
        lines.append(
            f"| {bold}{r['chunk']:g}{bold} | {bold}{r['left']:g}{bold} | "
            f"{bold}{r['lookahead']:g}{bold} | {r['compute_x']:.1f} | "
            f"{r['wer_vs_offline']:.3f} | {r['cer_vs_offline']:.3f} | {r['wer']:.3f} | "
            f"{r['cer']:.3f} |"
        )
    if rep.get("server"):
        lines += [
            "",
            "| load | streams ok | finals | final lag p50 s | p90 s | max s | REST clips done |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, o in rep["server"].items():
            lag = o["final_lag"] or {}
            f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(
                f"| {name} | {o['streams_ok']} | {lag.get('count', 0)} | "
                f"{f(lag.get('p50'))} | {f(lag.get('p90'))} | {f(lag.get('max'))} | "
                f"{o['rest_ok'] if o['rest_ok'] is not None else '-'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=DEMO)
    p.add_argument("--out", type=Path)
    p.add_argument("--skip-server", action="store_true")
    args = p.parse_args(argv)
    x, ref = speech()
    print(f"{len(x) / SAMPLE_RATE:.1f} s of speech, {len(ref.split())} words", flush=True)
    rep: dict = dict(
        model=str(args.model),
        seconds=len(x) / SAMPLE_RATE,
        reference=ref,
        sweep=sweep(args.model, x, ref),
    )
    if not args.skip_server:
        with tempfile.TemporaryDirectory() as work:
            rep["server"] = server_latency(args.model, x, Path(work))
    print(to_markdown(rep))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
