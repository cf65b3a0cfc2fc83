"""Held-out multi-sentence recordings with pauses: the long-audio figure of the model card.

    python -m training.longform                 # prints the figures
    python -m training.longform --write         # ... and records them in the model card
    python -m training.longform --dev           # the unseen voices' sentences: the dev set

Each recording joins consecutive held-out natural sentences (their own lead and tail silence cut
off, exactly, from the corpus metadata) with 0.4-1.5 s pauses until it lasts at least 60 s, and
goes through the served model's long-audio path (windows cut in pauses, frame-exact
stitching: service/windows.py), as a REST upload does. The same sentences sent one by one give the reference figure: the gap
between the two is what pauses and windowing cost. The unseen voices' sentences (--dev) make
the same recordings of other sentences and voices: the service's cuts were chosen there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from service.audio import Audio
from service.build import build_model
from service.schemas import Options
from service.settings import Settings
from training import export
from training.data import DATA_DIR, SAMPLE_RATE
from training.text import edit_distance

PAUSE_SECONDS = (0.4, 1.5)
MIN_SECONDS = 60.0
EDGE_SECONDS = 0.3  # silence before the first and after the last sentence
SPLIT = "heldout-natural"  # the card's figure
DEV_SPLIT = "heldout-voices"  # on which the service's windowing is chosen


def speech_only(audio: np.ndarray, meta: dict) -> np.ndarray:
    """One corpus utterance without the silence its renderer put either side."""
    lead = int(meta["lead_s"] * SAMPLE_RATE)
    tail = int(meta["tail_s"] * SAMPLE_RATE)
    clip = audio[meta["offset"] : meta["offset"] + meta["length"]]
    return clip[lead : len(clip) - tail].astype(np.float32) / 32768


def recordings(
    data_dir: Path, count: int, seed: int = 0, split: str = "heldout-natural"
) -> list[tuple[np.ndarray, list[int], list[float]]]:
    """`count` recordings: (samples, indices of the held-out sentences in it, pause lengths)."""
    meta = json.loads((data_dir / f"{split}.json").read_text())["utterances"]
    audio = np.load(data_dir / f"{split}.npy", mmap_mode="r")
    rng = np.random.default_rng(seed)
    edge = np.zeros(int(EDGE_SECONDS * SAMPLE_RATE), np.float32)
    out, i = [], 0
    for _ in range(count):
        parts, used, pauses = [edge], [], []
        while sum(len(p) for p in parts) < MIN_SECONDS * SAMPLE_RATE:
            if i == len(meta):
                raise ValueError(f"too few held-out sentences for {count} recordings")
            if used:
                pauses.append(round(float(rng.uniform(*PAUSE_SECONDS)), 3))
                parts.append(np.zeros(int(pauses[-1] * SAMPLE_RATE), np.float32))
            parts.append(speech_only(audio, meta[i]))
            used.append(i)
            i += 1
        out.append((np.concatenate([*parts, edge]), used, pauses))
    return out


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(word edits, reference words)."""
    r, h = ref.upper().split(), hyp.upper().split()
    return edit_distance(r, h), len(r)


def measure(
    model_dir: Path, data_dir: Path, count: int, decoder: str = "greedy", split: str = SPLIT
) -> dict:
    """WER of the long recordings against the same sentences transcribed one by one."""
    served = build_model(Settings(device="cpu", dtype="float32"), "demo", str(model_dir))
    options = Options(decoder=decoder)  # type: ignore[arg-type]

    def transcribe(samples: np.ndarray) -> str:
        audio = Audio(samples, len(samples) / SAMPLE_RATE, SAMPLE_RATE, 1)
        return served.predict_now([audio], options)[0].text or ""

    meta = json.loads((data_dir / f"{split}.json").read_text())["utterances"]
    audio = np.load(data_dir / f"{split}.npy", mmap_mode="r")
    long_edits = alone_edits = words = 0
    seconds, pauses_all, sentences = 0.0, [], 0
    for samples, used, pauses in recordings(data_dir, count, split=split):
        ref = " ".join(meta[j]["text"] for j in used)
        edits, n = word_errors(ref, transcribe(samples))
        long_edits, words = long_edits + edits, words + n
        for j in used:
            clip = audio[meta[j]["offset"] : meta[j]["offset"] + meta[j]["length"]]
            clip = clip.astype(np.float32) / 32768
            alone_edits += word_errors(meta[j]["text"], transcribe(clip))[0]
        seconds += len(samples) / SAMPLE_RATE
        pauses_all += pauses
        sentences += len(used)
    return {
        "recordings": count,
        "sentences": sentences,
        "seconds": round(seconds, 1),
        "pauses_s": [min(pauses_all), max(pauses_all)],
        "wer_long": long_edits / words,
        "wer_alone": alone_edits / words,
        "windows_s": list(served.windows),  # the checkpoint's, or the service's defaults
        "cuts": "pauses",  # service/windows.py: in pauses (before: at fixed places)
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=export.MODEL_DIR)
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--recordings", type=int, default=4)
    p.add_argument("--decoder", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--write", action="store_true", help="record in the model's card")
    p.add_argument(
        "--dev",
        action="store_true",
        help=f"recordings of {DEV_SPLIT} instead, where the service's cuts were chosen",
    )
    args = p.parse_args()
    if args.dev and args.write:
        p.error("the card records the natural sentences' figure; --dev only prints")
    torch.set_num_threads(2)
    split = DEV_SPLIT if args.dev else SPLIT
    result = measure(args.model, args.data, args.recordings, args.decoder, split)
    print(
        f"{result['recordings']} recordings, {result['sentences']} sentences, "
        f"{result['seconds']:.0f} s: WER {100 * result['wer_long']:.1f}% as long recordings, "
        f"{100 * result['wer_alone']:.1f}% one by one ({args.decoder})"
    )
    if args.write:
        history = json.loads((args.model / "training.json").read_text())
        history.setdefault("longform", {})[args.decoder] = result
        export.update_card(args.model, history)


if __name__ == "__main__":
    main()
