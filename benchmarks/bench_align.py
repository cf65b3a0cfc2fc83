"""CTC forced alignment (service/align): memory, speed, and word boundaries on espeak speech.

    python benchmarks/bench_align.py --out results/align.json       # all sections
    python benchmarks/bench_align.py --sections boundaries          # one section

Sections:
- memory: align() on random emissions of the right shape for 1, 10 and 60 min of audio (50
  frames a second, 32 columns like demo-ctc) with a random transcript of ~833 tokens a minute
  (50,000 an hour, ~140 words a minute). Random emissions change the path, not the memory: the
  Viterbi allocates by shape only. Each size runs in a fresh process: peak RSS (ru_maxrss)
  before and after align(), and tracemalloc's peak during it (numpy reports its buffers).
- speed: align() alone on precomputed emissions (normalisation, both Viterbi passes, spans),
  audio seconds per second of wall and of CPU time, for 10 s clips one by one and one
  10-minute file; and, for scale, demo-ctc's forward pass on batches of 8 10 s clips.
- boundaries: demo-ctc's emissions of espeak-ng speech synthesised word by word, joined by
  known silences (0.15-0.6 s), aligned with the text; the error of each word's start and end
  against the known ones, mean and 90th percentile, on the path alone and with the onset
  refinement (service/align/onsets.py). Also with one word the text lacks (dropped from the
  text, still spoken), with and without the star.
- calibration: the onset threshold swept on CALIBRATION, sentences the boundaries section does
  not use (demo-ctc's held-out set, never trained on): how ONSET_LOG_PROB was chosen.
- validation: that threshold against the path alone on two more held-out sets.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_align.py` from anywhere
    sys.path.insert(0, str(ROOT))

from service.align import align  # noqa: E402
from service.align.onsets import ONSET_LOG_PROB  # noqa: E402
from service.wav2vec2.tokenizer import CTCTokenizer  # noqa: E402

DEMO = ROOT / "service" / "models" / "demo-ctc"
SAMPLE_RATE = 16_000
FRAMES_PER_SECOND = 50  # demo-ctc: 320 samples a frame
TOKENS_PER_MINUTE = 50_000 / 60
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Sentences kept out of demo-ctc's training corpus (training/sentences.py RESERVED), each in a
# voice and speed it was not trained with together: (text, voice, variant, wpm, pitch).
SPOKEN = [
    ("she sells sea shells by the sea shore", "en-us", "m2", 150, 50),
    ("we will meet at the station tomorrow", "en", "f3", 160, 60),
    ("open the door and turn on the light", "en-gb-scotland", "", 155, 45),
    ("my phone number is easy to remember", "en-029", "m4", 165, 55),
    ("please call me back after lunch", "en-us-nyc", "m7", 150, 40),
    ("the weather is nice today", "en-gb-x-rp", "f5", 145, 65),
    ("the quick brown fox jumps over the lazy dog", "en", "m3", 160, 45),
    ("hello world", "en-us", "", 150, 50),
]
CALIBRATION_SENTENCES = 24  # the first of demo-ctc's held-out set heldout-natural (seed 0)
ONSET_SWEEP = (-13.0, -12.0, -11.0, -10.0, -9.0, -8.0, -7.0, -6.0)
GAP_SECONDS = (0.15, 0.6)
EDGE_SECONDS = 0.3


# ---- word-by-word speech with known boundaries -------------------------------------------


def spoken_words(
    words: list[str], voice: str, variant: str, speed: int, pitch: int, seed: int = 0
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Each word synthesised alone (silence trimmed), joined by known random gaps, with
    EDGE_SECONDS of silence at both ends; returns the samples and each word's (start, end) s."""
    from training.data import espeak

    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(EDGE_SECONDS * SAMPLE_RATE), np.float32)]
    bounds = []
    at = len(parts[0])
    for i, word in enumerate(words):
        if i:
            gap = np.zeros(int(rng.uniform(*GAP_SECONDS) * SAMPLE_RATE), np.float32)
            parts.append(gap)
            at += len(gap)
        speech = espeak(word, voice, variant, speed, pitch)
        parts.append(0.8 * speech / max(float(np.abs(speech).max()), 1e-6))
        bounds.append((at / SAMPLE_RATE, (at + len(speech)) / SAMPLE_RATE))
        at += len(speech)
    parts.append(np.zeros(int(EDGE_SECONDS * SAMPLE_RATE), np.float32))
    return np.concatenate(parts).astype(np.float32), bounds


def logits_of(model, samples: np.ndarray) -> np.ndarray:
    """(T, V) float32 CTC logits of one clip from a LoadedModel."""
    import torch

    with torch.inference_mode():
        return model.model([torch.from_numpy(model.features(samples))]).data.float().numpy()


def synthesised(model, cases=SPOKEN) -> list[tuple[list[str], np.ndarray, list]]:
    """(words, demo logits, known (start, end) s of each word) of each spoken case."""
    out = []
    for n, (text, *voice) in enumerate(cases):
        words = text.split()
        x, bounds = spoken_words(words, *voice, seed=n)
        out.append((words, logits_of(model, x), bounds))
    return out


Case = tuple[str, str, str, int, int]  # (text, voice, variant, wpm, pitch)


def heldout_cases(kind: str, n: int = CALIBRATION_SENTENCES) -> list[Case]:
    """The first `n` utterances of demo-ctc's held-out set `kind`: none is in SPOKEN
    (training/sentences.py RESERVED keeps those out of every split)."""
    from training.data import plan_split
    from training.sentences import RESERVED

    plan = plan_split(f"heldout-{kind}", n, 0, RESERVED)
    return [(u.text, u.voice, u.variant, u.speed, u.pitch) for u in plan]


def calibration_cases() -> list[Case]:
    return heldout_cases("natural")


def boundary_errors(
    model,
    spoken: list,
    *,
    drop: bool = False,
    star: bool = False,
    onset_log_prob: float | None = ONSET_LOG_PROB,
) -> dict:
    """Start and end errors (s) of every aligned word of `spoken` (from synthesised) against
    the known boundaries; with `drop`, the text lacks one middle word of each sentence (still
    spoken, not scored); `onset_log_prob` None: the path's own starts."""
    starts: list[float] = []  # signed: aligned - known
    ends: list[float] = []
    for words, logits, bounds in spoken:
        keep = list(range(len(words)))
        if drop and len(words) > 2:
            keep.remove(len(words) // 2)
        text = " ".join(words[i] for i in keep)
        result = align(logits, text, model.tokenizer, star=star, onset_log_prob=onset_log_prob)
        fs = model.frame_seconds
        for word, i in zip(result.words, keep):
            start, end = bounds[i]
            starts.append(word.start * fs - start)
            ends.append(word.end * fs - end)
    e = np.abs(starts + ends)
    return dict(
        boundaries=len(e),
        mean_s=float(e.mean()),
        p90_s=float(np.percentile(e, 90)),
        max_s=float(e.max()),
        start_bias_s=float(np.mean(starts)),
        end_bias_s=float(np.mean(ends)),
        start_mean_s=float(np.abs(starts).mean()),
        end_mean_s=float(np.abs(ends).mean()),
    )


# ---- random inputs of the right shape ----------------------------------------------------


def random_case(minutes: float, seed: int = 0) -> tuple[np.ndarray, str, CTCTokenizer]:
    """Random (T, 32) logits for `minutes` of audio, a random transcript of ~833 tokens a
    minute (words of 1-9 letters, delimiters included), and demo-ctc's tokenizer."""
    rng = np.random.default_rng(seed)
    frames = int(minutes * 60 * FRAMES_PER_SECOND)
    tokens = int(minutes * TOKENS_PER_MINUTE)
    words, used = [], 0
    while used < tokens:
        n = int(rng.integers(1, 10))
        words.append("".join(rng.choice(list(LETTERS), size=n)))
        used += n + 1
    tokenizer = CTCTokenizer.from_dir(DEMO)
    logits = rng.normal(scale=2.0, size=(frames, 32)).astype(np.float32)
    return logits, " ".join(words), tokenizer


def rss_mb() -> float:
    """Peak resident set of this process so far, MB (ru_maxrss is KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(minutes: float) -> dict:
    """Run in a fresh process: one alignment of `minutes` with memory measured."""
    logits, text, tokenizer = random_case(minutes)
    before = rss_mb()
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    result = align(logits, text, tokenizer)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tokens = sum(len(w.word) for w in result.words) + len(result.words) - 1
    return dict(
        minutes=minutes,
        frames=len(logits),
        tokens=tokens,
        states=2 * tokens + 1,
        input_mb=logits.nbytes / 2**20,
        rss_before_mb=before,
        rss_peak_mb=rss_mb(),
        traced_peak_mb=traced_peak / 2**20,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
    )


def memory(sizes=(1, 10, 60)) -> list[dict]:
    rows = []
    for minutes in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(minutes)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows.append(json.loads(out.splitlines()[-1]))
        print(f"memory {minutes} min: {rows[-1]}", flush=True)
    return rows


def _timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of fn(): on a shared machine the CPU time is the steadier figure."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def speed(clips: int = 20) -> dict:
    """align() alone on precomputed random emissions: 10 s clips one by one, one 10 min file."""
    logits, text, tokenizer = random_case(clips * 10 / 60)
    per_clip, words = len(logits) // clips, text.split()
    per_words = len(words) // clips

    def short() -> None:
        for i in range(clips):
            align(
                logits[i * per_clip : (i + 1) * per_clip],
                " ".join(words[i * per_words : (i + 1) * per_words]),
                tokenizer,
            )

    wall, cpu = _timed(short)
    rep = dict(
        align_10s_clips_audio_s_per_s=clips * 10 / wall,
        align_10s_clips_audio_s_per_cpu_s=clips * 10 / cpu,
    )
    long_logits, long_text, _ = random_case(10, seed=1)
    wall, cpu = _timed(lambda: align(long_logits, long_text, tokenizer))
    rep.update(align_10min_audio_s_per_s=600 / wall, align_10min_audio_s_per_cpu_s=600 / cpu)
    rep.update(forward_speed())
    return rep


def forward_speed(batches: int = 3, batch: int = 8) -> dict:
    """demo-ctc's forward pass (CPU, fp32) on batches of 8 10 s clips, audio s per s."""
    import torch

    from service.wav2vec2.loading import load_model

    model = load_model(str(DEMO), device="cpu", dtype="float32")
    rng = np.random.default_rng(0)
    clips = [rng.normal(scale=0.1, size=10 * SAMPLE_RATE).astype(np.float32) for _ in range(batch)]
    inputs = [torch.from_numpy(model.features(c)) for c in clips]

    def run() -> None:
        for _ in range(batches):
            model.model(inputs)

    with torch.inference_mode():
        model.model(inputs[:2])  # warm-up
        wall, cpu = _timed(run)
    audio = batches * batch * 10
    return dict(
        forward_10s_batch8_audio_s_per_s=audio / wall,
        forward_10s_batch8_audio_s_per_cpu_s=audio / cpu,
        torch_threads=torch.get_num_threads(),
    )


def boundaries() -> dict:
    from service.wav2vec2.loading import load_model

    model = load_model(str(DEMO), device="cpu", dtype="float32")
    spoken = synthesised(model)
    rep = dict(
        matching_text_path=boundary_errors(model, spoken, onset_log_prob=None),
        matching_text=boundary_errors(model, spoken),
        missing_word_plain=boundary_errors(model, spoken, drop=True),
        missing_word_star=boundary_errors(model, spoken, drop=True, star=True),
        matching_text_star=boundary_errors(model, spoken, star=True),
    )
    for name, row in rep.items():
        print(f"boundaries {name}: {row}", flush=True)
    return rep


def calibration() -> dict:
    """Mean boundary error on CALIBRATION for each onset threshold (None: the path's starts)."""
    from service.wav2vec2.loading import load_model

    model = load_model(str(DEMO), device="cpu", dtype="float32")
    spoken = synthesised(model, calibration_cases())
    rep = {}
    for threshold in (None, *ONSET_SWEEP):
        rep[str(threshold)] = boundary_errors(model, spoken, onset_log_prob=threshold)
        print(f"calibration onset {threshold}: {rep[str(threshold)]}", flush=True)
    return rep


def validation() -> dict:
    """The chosen threshold against the path alone on two more held-out sets (unseen voice
    variants; random word sequences), without their sentences that calibrated it."""
    from service.wav2vec2.loading import load_model

    model = load_model(str(DEMO), device="cpu", dtype="float32")
    calibrated = {text for text, *_ in calibration_cases()}
    rep = {}
    for kind in ("voices", "random"):
        cases = [c for c in heldout_cases(kind) if c[0] not in calibrated]
        spoken = synthesised(model, cases)
        rep[f"{kind}_path"] = boundary_errors(model, spoken, onset_log_prob=None)
        rep[f"{kind}_onsets"] = boundary_errors(model, spoken)
        print(f"validation {kind}: {rep[f'{kind}_path']} -> {rep[f'{kind}_onsets']}", flush=True)
    return rep


def boundary_rows(rows: dict) -> list[str]:
    return [
        "",
        "| boundaries | n | mean ms | p90 ms | max ms | starts: mean, bias ms | "
        "ends: mean, bias ms |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {k} | {r['boundaries']} | {1000 * r['mean_s']:.0f} | "
            f"{1000 * r['p90_s']:.0f} | {1000 * r['max_s']:.0f} | "
            f"{1000 * r['start_mean_s']:.0f}, {1000 * r['start_bias_s']:+.0f} | "
            f"{1000 * r['end_mean_s']:.0f}, {1000 * r['end_bias_s']:+.0f} |"
            for k, r in rows.items()
        ),
    ]


def to_markdown(rep: dict) -> str:
    lines = []
    if "memory" in rep:
        lines += [
            "| audio | frames | states | align() wall s, CPU s | RSS before -> peak MB | "
            "traced MB |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['minutes']} min | {r['frames']:,} | {r['states']:,} | "
            f"{r['seconds']:.1f}, {r.get('cpu_seconds', float('nan')):.1f} | "
            f"{r['rss_before_mb']:.0f} -> {r['rss_peak_mb']:.0f} | "
            f"{r['traced_peak_mb']:.0f} |"
            for r in rep["memory"]
        ]
    if "speed" in rep:
        lines += ["", *(f"- {k}: {v:.1f}" for k, v in rep["speed"].items())]
    for section in ("boundaries", "calibration", "validation"):
        if section in rep:
            lines += boundary_rows(rep[section])
    return "\n".join(lines)


SECTIONS = {
    "memory": memory,
    "speed": speed,
    "boundaries": boundaries,
    "calibration": calibration,
    "validation": validation,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    p.add_argument("--out", type=Path)
    p.add_argument("--memory-child", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child)))
        return 0
    rep: dict = dict(
        machine=platform.processor() or platform.machine(),
        python=platform.python_version(),
        numpy=np.__version__,
    )
    for name in args.sections:
        rep[name] = SECTIONS[name]()
    print(to_markdown(rep))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
