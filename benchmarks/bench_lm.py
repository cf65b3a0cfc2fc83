"""Beam search with the demo LM: speed against pyctcdecode, and accuracy on the held-out sets.

    python benchmarks/bench_lm.py --data /path/to/training/data --out results/lm.json

1. Logits: service/models/demo-ctc (fp32, CPU) on the first --n utterances of each held-out set
   (training/data.py: heldout-natural, heldout-random, heldout-voices).
2. Accuracy: corpus CER/WER of greedy (the tokenizer), beam without LM, and beam with the
   demo LM (service/models/demo-ctc) at its attrs.json alpha/beta, beam width --beam.
3. Speed, in this process, one clip after the other: seconds of decoding per second of audio at
   beam 16/64/128, ours and pyctcdecode 0.5.0 + KenLM on the same logits and ARPA (each clip
   timed by both, in alternating order); medians over clips, and the median of the paired
   ratios. Without pyctcdecode or kenlm only our side is timed.
4. A 10 s clip end to end on CPU: features + forward vs beam decoding at the default beam.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_lm.py` from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from service.lm import BeamOptions, beam_decode, load_decoder  # noqa: E402
from service.wav2vec2.loading import LoadedModel, load_model  # noqa: E402
from training.data import HELDOUT_SETS  # noqa: E402
from training.text import error_rates  # noqa: E402

MODELS = ROOT / "service" / "models"
WIDTHS = (16, 64, 128)


def held_out(data: Path, name: str, n: int) -> tuple[list[np.ndarray], list[str]]:
    meta = json.loads((data / f"{name}.json").read_text())["utterances"][:n]
    audio = np.load(data / f"{name}.npy", mmap_mode="r")
    clips = [
        np.asarray(audio[m["offset"] : m["offset"] + m["length"]], np.float32) / 32768 for m in meta
    ]
    return clips, [m["text"] for m in meta]


def logits_of(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.model([torch.from_numpy(model.features(x))]).data.double().numpy()


def accuracy(model, decoder, tokenizer, sets, beam: int) -> dict:
    out = {}
    for name, (logits, refs) in sets.items():
        greedy = [tokenizer.decode(lg.argmax(-1).tolist()).text for lg in logits]
        plain = [
            beam_decode(lg, tokenizer, None, BeamOptions(beam_width=beam)).text for lg in logits
        ]
        fused = [
            beam_decode(lg, tokenizer, decoder, BeamOptions(beam_width=beam)).text for lg in logits
        ]
        out[name] = {
            "n": len(refs),
            "greedy": error_rates(refs, greedy),
            "beam": error_rates(refs, plain),
            "beam+lm": error_rates(refs, fused),
        }
    return out


def write_card(results: dict, args: argparse.Namespace) -> None:
    """The greedy / beam / beam + LM table of demo-ctc's card (training.json "decoders")."""
    from training import export

    model_dir = MODELS / "demo-ctc"
    history = json.loads((model_dir / "training.json").read_text())
    attrs = json.loads((model_dir / "language_model" / "attrs.json").read_text())
    history["decoders"] = {
        "description": (
            f"Round-{history['rounds'][-1]['round']} weights; beam width {args.beam}, alpha "
            f"{attrs['alpha']} and beta {attrs['beta']} (language_model/attrs.json, chosen on a "
            "600-utterance dev set that shares no sentence with these sets or the LM's text: "
            "`python -m training.tune_lm`), the word 3-gram LM shipped in `language_model/` "
            "(built by `python -m training.build_lm` from training text only). The service "
            "decodes with beam + LM by default. Command: `python benchmarks/bench_lm.py "
            f"--threads 1 --n {args.n} --beam {args.beam} --speed-n 0 --write`."
        ),
        "results": results,
    }
    export.update_card(model_dir, history)


def reference_decoder():
    try:
        import kenlm  # noqa: F401
        from pyctcdecode import BeamSearchDecoderCTC
    except ImportError:
        return None
    return BeamSearchDecoderCTC.load_from_dir(str(MODELS / "demo-ctc"))


def speed(decoder, tokenizer, reference, clips: list[tuple[np.ndarray, float]]) -> dict:
    out = {}
    for width in WIDTHS:
        ours, theirs, ratios, same = [], [], [], 0
        for k, (lg, seconds) in enumerate(clips):

            def run_ours(lg=lg, width=width):
                return beam_decode(lg, tokenizer, decoder, BeamOptions(beam_width=width)).text

            def run_theirs(lg=lg, width=width):
                return reference.decode_beams(lg, beam_width=width)[0][0]

            runners = [run_ours] if reference is None else [run_ours, run_theirs]
            times, texts = {}, {}
            for run in runners if k % 2 == 0 else runners[::-1]:
                start = time.perf_counter()
                texts[run] = run()
                times[run] = (time.perf_counter() - start) / seconds
            ours.append(times[run_ours])
            if reference is not None:
                theirs.append(times[run_theirs])
                ratios.append(times[run_ours] / times[run_theirs])
                same += texts[run_ours] == texts[run_theirs]
        row = {"ours_s_per_audio_s": statistics.median(ours)}
        if reference is not None:
            row.update(
                pyctcdecode_s_per_audio_s=statistics.median(theirs),
                paired_ratio_median=statistics.median(ratios),
                same_text=f"{same}/{len(clips)}",
            )
        out[width] = row
    return out


def ten_seconds(model: LoadedModel, decoder, tokenizer, clips: list[np.ndarray]) -> dict:
    """Held-out clips joined with 0.3 s of silence up to 10 s: forward vs default-beam decode."""
    gap = np.zeros(4800, np.float32)
    parts, total = [], 0
    for x in clips:
        if total >= 160_000:
            break
        parts += [x, gap]
        total += len(x) + len(gap)
    x = np.concatenate(parts)[:160_000]
    forward, decode = [], []
    for _ in range(5):
        start = time.perf_counter()
        lg = logits_of(model, x)
        forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        beam_decode(lg, tokenizer, decoder, BeamOptions())
        decode.append(time.perf_counter() - start)
    f, d = statistics.median(forward), statistics.median(decode)
    return {"forward_s": f, "beam_default_s": d, "beam_share_of_total": d / (f + d)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "training" / "data")
    p.add_argument("--n", type=int, default=200, help="utterances per held-out set")
    p.add_argument("--speed-n", type=int, default=40, help="clips timed per beam width (0: none)")
    p.add_argument("--beam", type=int, default=100, help="beam width for the accuracy table")
    p.add_argument("--out", type=Path)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--cache", type=Path, help="keep the logits in this .npz between runs")
    p.add_argument("--write", action="store_true", help="the accuracy table into demo-ctc's card")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(str(MODELS / "demo-ctc"), device="cpu", dtype="float32")
    tokenizer = model.tokenizer
    decoder = load_decoder(MODELS / "demo-ctc")
    cached = dict(np.load(args.cache)) if args.cache and args.cache.exists() else {}
    sets, raw = {}, {}
    for kind in HELDOUT_SETS:
        clips, refs = held_out(args.data, f"heldout-{kind}", args.n)
        raw[kind] = clips
        keys = [f"{kind}-{i}" for i in range(len(clips))]
        for i, (key, x) in enumerate(zip(keys, clips)):
            if key not in cached:
                cached[key] = logits_of(model, x)
            if i % 25 == 24:
                print(f"heldout-{kind}: {i + 1} clips", file=sys.stderr, flush=True)
        sets[kind] = ([cached[k] for k in keys], refs)
        print(f"heldout-{kind}: {len(clips)} clips", file=sys.stderr, flush=True)
    if args.cache:
        np.savez(args.cache, **cached)
    report = {"accuracy": accuracy(model, decoder, tokenizer, sets, args.beam)}
    print(json.dumps(report["accuracy"], indent=1), flush=True)
    if args.write:
        write_card(report["accuracy"], args)
    if args.speed_n == 0:
        return 0
    timed = [
        (lg, len(x) / 16_000) for kind in HELDOUT_SETS for lg, x in zip(sets[kind][0], raw[kind])
    ][:: max(1, 3 * args.n // args.speed_n)]
    report["speed"] = speed(decoder, tokenizer, reference_decoder(), timed)
    report["ten_seconds"] = ten_seconds(model, decoder, tokenizer, raw["natural"])
    print(json.dumps({k: report[k] for k in ("speed", "ten_seconds")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
