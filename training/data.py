"""Synthesize the demo corpus with espeak-ng: seeded, sharded, stored as int16 + JSON.

    python -m training.data --train-shards 24           # training/data/, ~1,000 utterances a shard

Layout of training/data/: `<split>.npy` (one int16 array, utterances back to back) beside
`<split>.json` ({"utterances": [{"text", "offset", "length", ...}]}). Splits: `train-00000`...,
and the held-out sets `heldout-natural` (new template sentences, seen voices), `heldout-random`
(random word sequences, seen voices) and `heldout-voices` (voice variants never trained on).
Existing splits are kept, so a later round can add shards without redoing the others; a split
written by an older CORPUS_VERSION is synthesized again.

Corpus versions: 1 (rounds 1-3) single phrases with 0-0.5 s of silence at the ends; 2 adds a
0.3-1.5 s pause between two words of 25% of training utterances, because a model that never
heard a pause inside an utterance emits only blanks across one, so the tokenizer glues the
words either side of it together ("WORLDMY" for "world. My"), as round 3 did on multi-sentence
audio (benchmarks/bench_stream.py, offline row). Held-out sets have no inner pauses either way.

Frequent-word shards (`train-frequent-00000`..., `--frequent-shards`, from round 10) are planned
like the others except that their random sequences draw words by English frequency, tempered
(`sentences.frequent_sequence`): in the uniform draw OR, WHEN and DOES were heard about 100 times
in 93 h and round 9 spelled them ORE, WEN and DOS. The first shards and the held-out sets are
unchanged; the training loop reads every `train-*` split.

Connected shards (`train-connected-00000`..., `--connected-shards`, from round 12) replace the
random sequences with function-word chunks between frequency-drawn words
(`sentences.connected_sequence`): round 11 had heard ME before TO or WHEN before THE only by
chance, and spelled them METER and WEN in connected speech.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import time
import zlib
from dataclasses import asdict, dataclass, replace
from functools import cache
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from training.sentences import (
    RESERVED,
    connected_sequence,
    frequent_sequence,
    natural_sentence,
    random_sequence,
)

SAMPLE_RATE = 16_000
DATA_DIR = Path(__file__).parent / "data"
# espeak-ng's own English voices (the MBROLA ones need voice files that are not installed).
VOICES = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
# Never trained on: held-out set (c).
HELDOUT_VARIANTS = (
    "f4",
    "m5",
    "Andrea",
    "benjamin",
    "klatt3",
    "Mike",
    "steph2",
    "travis",
    "Hugo",
    "grandma",
)
HELDOUT_SETS = ("natural", "random", "voices")
NATURAL_FRACTION = 0.3
NOISY_FRACTION = 0.6
CORPUS_VERSION = 2
PAUSE_FRACTION = 0.25  # of training utterances (version 2)
PAUSE_SECONDS = (0.3, 1.5)
FREQUENT_PREFIX = "train-frequent-"
CONNECTED_PREFIX = "train-connected-"


@cache
def all_variants() -> tuple[str, ...]:
    """Variant file names from `espeak-ng --voices=variant`, plus "" for the plain voice."""
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    names = set()
    for line in out.splitlines()[1:]:
        path = line[line.index("!v/") + 3 :].split("  ")[0] if "!v/" in line else ""
        if path and " " not in path:  # "Mr serious" cannot be named after a '+'
            names.add(path)
    return ("", *sorted(names))


def seen_variants() -> tuple[str, ...]:
    return tuple(v for v in all_variants() if v not in HELDOUT_VARIANTS)


@dataclass(frozen=True)
class Utterance:
    """Everything that decides one utterance's audio; `seed` drives its noise."""

    text: str
    kind: str  # "random" or "natural"
    voice: str
    variant: str
    speed: int  # words per minute
    pitch: int
    lead_s: float
    tail_s: float
    gain: float
    snr_db: float | None
    seed: int
    pause_word: int = 0  # a pause before this word (0: none)
    pause_s: float = 0.0


def _rng(*keys: object) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(k).encode()) for k in keys])


def plan_split(name: str, n: int, seed: int, exclude: set[str]) -> list[Utterance]:
    """The utterances of one split, a pure function of (name, n, seed, exclude)."""
    rng = _rng(seed, name)
    kind = name.removeprefix("heldout-")
    variants = HELDOUT_VARIANTS if kind == "voices" else seen_variants()
    if name.startswith(FREQUENT_PREFIX):
        sequence, sequence_kind = frequent_sequence, "frequent"
    elif name.startswith(CONNECTED_PREFIX):
        sequence, sequence_kind = connected_sequence, "connected"
    else:
        sequence, sequence_kind = random_sequence, "random"
    out: list[Utterance] = []
    texts: set[str] = set()
    while len(out) < n:
        natural = kind == "natural" or (
            kind not in HELDOUT_SETS[:2] and rng.random() < NATURAL_FRACTION
        )
        text = natural_sentence(rng, heldout=kind == "natural") if natural else sequence(rng)
        if text in exclude or text in texts:
            continue
        texts.add(text)
        out.append(
            Utterance(
                text=text,
                kind="natural" if natural else sequence_kind,
                voice=VOICES[int(rng.integers(len(VOICES)))],
                variant=variants[int(rng.integers(len(variants)))],
                speed=int(rng.integers(120, 231)),
                pitch=int(rng.integers(20, 81)),
                lead_s=round(float(rng.uniform(0, 0.5)), 3),
                tail_s=round(float(rng.uniform(0, 0.5)), 3),
                gain=round(float(rng.uniform(0.3, 1.0)), 3),
                snr_db=round(float(rng.uniform(20, 45)), 1)
                if rng.random() < NOISY_FRACTION
                else None,
                seed=int(rng.integers(2**31)),
            )
        )
    if kind not in HELDOUT_SETS:
        out = _with_pauses(out, _rng(seed, name, "pauses"))
    return out


def _with_pauses(plan: list[Utterance], rng: np.random.Generator) -> list[Utterance]:
    """A pause between two words of PAUSE_FRACTION of the utterances; drawn from its own
    generator, so texts, voices and everything else stay what version 1 drew."""
    out = []
    for u in plan:
        words = len(u.text.split())
        # Three draws for every utterance, used or not, so one's pause never shifts another's.
        paused = rng.random() < PAUSE_FRACTION
        word, seconds = int(rng.integers(1, max(2, words))), float(rng.uniform(*PAUSE_SECONDS))
        if paused and words >= 2:
            u = replace(u, pause_word=word, pause_s=round(seconds, 3))
        out.append(u)
    return out


def espeak(text: str, voice: str, variant: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's float32 waveform at SAMPLE_RATE, leading and trailing silence trimmed."""
    name = f"{voice}+{variant}" if variant else voice
    wav = subprocess.run(
        ["espeak-ng", "-v", name, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        capture_output=True,
        check=True,
    ).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    x = soxr.resample(x, rate, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(x) > 0.01 * max(float(np.abs(x).max()), 1e-6))
    return x[loud[0] : loud[-1] + 1] if len(loud) else x


def render(u: Utterance) -> np.ndarray:
    """The finished utterance: speech at `gain` peak, silence either side, noise at `snr_db`."""
    if u.pause_word:
        words = u.text.split()
        parts = [
            espeak(" ".join(ws), u.voice, u.variant, u.speed, u.pitch)
            for ws in (words[: u.pause_word], words[u.pause_word :])
        ]
        pause = np.zeros(int(u.pause_s * SAMPLE_RATE), np.float32)
        speech = np.concatenate([parts[0], pause, parts[1]])
    else:
        speech = espeak(u.text, u.voice, u.variant, u.speed, u.pitch)
    speech = speech / max(float(np.abs(speech).max()), 1e-6) * u.gain
    lead, tail = int(u.lead_s * SAMPLE_RATE), int(u.tail_s * SAMPLE_RATE)
    x = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])
    if u.snr_db is not None:
        power = float(np.mean(speech**2))
        sigma = (power / 10 ** (u.snr_db / 10)) ** 0.5
        x = x + np.random.default_rng(u.seed).normal(0, sigma, len(x)).astype(np.float32)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def write_split(args: tuple[Path, str, list[Utterance]]) -> tuple[str, int, float]:
    """Render and store one split; returns (name, utterances, audio seconds)."""
    out_dir, name, plan = args
    audio, meta, offset = [], [], 0
    for u in plan:
        x = render(u)
        audio.append(x)
        meta.append({**asdict(u), "offset": offset, "length": len(x)})
        offset += len(x)
    tmp = out_dir / f".{name}.npy"
    np.save(tmp, np.concatenate(audio))
    tmp.rename(out_dir / f"{name}.npy")
    # The JSON lands last: a split counts as done only when it exists.
    (out_dir / f"{name}.json").write_text(
        json.dumps({"version": CORPUS_VERSION, "utterances": meta}, indent=0)
    )
    return name, len(plan), offset / SAMPLE_RATE


def _version(meta: Path) -> int:
    """CORPUS_VERSION of a stored split; 0 when absent (1 for the files before versions)."""
    return json.loads(meta.read_text()).get("version", 1) if meta.exists() else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=DATA_DIR)
    p.add_argument("--train-shards", type=int, default=24)
    p.add_argument(
        "--frequent-shards", type=int, default=0, help="shards of frequency-drawn sequences"
    )
    p.add_argument(
        "--connected-shards", type=int, default=0, help="shards of function-word chunk sequences"
    )
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--heldout-size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    heldout = {
        f"heldout-{k}": plan_split(f"heldout-{k}", args.heldout_size, args.seed, RESERVED)
        for k in HELDOUT_SETS
    }
    exclude = RESERVED | {u.text for plan in heldout.values() for u in plan}
    jobs = [(args.out, name, plan) for name, plan in heldout.items()]
    jobs += [
        (args.out, name, plan_split(name, args.shard_size, args.seed, exclude))
        for name in (
            *(f"train-{i:05d}" for i in range(args.train_shards)),
            *(f"{FREQUENT_PREFIX}{i:05d}" for i in range(args.frequent_shards)),
            *(f"{CONNECTED_PREFIX}{i:05d}" for i in range(args.connected_shards)),
        )
    ]
    # Held-out sets are the same in every version; training shards are redone when older.
    todo = [
        j
        for j in jobs
        if _version(args.out / f"{j[1]}.json") < (1 if j[1] in heldout else CORPUS_VERSION)
    ]
    print(
        f"{len(jobs) - len(todo)} splits present, {len(todo)} to synthesize "
        f"({len(all_variants())} variants, {len(HELDOUT_VARIANTS)} held out)",
        flush=True,
    )
    start = time.monotonic()
    with Pool(args.workers) as pool:
        for name, n, seconds in pool.imap_unordered(write_split, todo):
            elapsed = time.monotonic() - start
            print(
                f"{name}: {n} utterances, {seconds / 3600:.2f} h audio ({elapsed:.0f} s elapsed)",
                flush=True,
            )
    manifest = {}
    for _, name, _ in jobs:
        meta = json.loads((args.out / f"{name}.json").read_text())["utterances"]
        manifest[name] = {
            "utterances": len(meta),
            "hours": sum(m["length"] for m in meta) / SAMPLE_RATE / 3600,
        }
    (args.out / "manifest.json").write_text(
        json.dumps(
            {
                "version": CORPUS_VERSION,
                "seed": args.seed,
                "sample_rate": SAMPLE_RATE,
                "voices": VOICES,
                "heldout_variants": HELDOUT_VARIANTS,
                "splits": manifest,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
