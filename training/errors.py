"""Where the greedy word errors are: demo-ctc's held-out transcripts, word error by word error.

    python -m training.errors                 # service/models/demo-ctc, prints the breakdown
    python -m training.errors --write         # ... and records it in the model card

CER counts letters and WER counts words, so one wrong letter costs a whole word: the card's
natural set reads CER 5.9% but WER 23.8%. This says what the word errors are. The words of a
transcript are aligned to the reference (minimum edits); each run of edits between two
matched words is one region, and its edits are counted as:
- boundary: the region's words joined equal the reference's joined ("ALICEASKED"): a word
  gap missed or added, every letter right;
- non-word: a substitution into a word the training transcripts never contain ("DOS" for
  DOES): a spelling built from the sound;
- real word: a substitution into another training word ("VARY" for VERY);
- deleted, inserted: a word with no counterpart.
Each substituted or deleted reference word is also counted by how often the training
transcripts contain it, which is how often the model heard it spelled.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from service.wav2vec2.loading import load_model
from training import export
from training.corpus import Split, transcripts
from training.data import DATA_DIR, HELDOUT_SETS
from training.forward import transcribe

KINDS = ("boundary", "non-word", "real word", "deleted", "inserted")
# Training-text counts splitting the reference words the model got wrong.
FREQUENCY_BANDS = ((0, 200), (200, 1_000), (1_000, None))


def alignment(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str | None, str | None]]:
    """Minimum-edit alignment of two word lists as (ref word, hyp word) pairs: both set for a
    match or substitution, one None for a deletion or insertion. Ties prefer substitution."""
    n, m = len(ref), len(hyp)
    cost = [[i + j if i * j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(
                cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]),
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
            )
    pairs: list[tuple[str | None, str | None]] = []
    i, j = n, m
    while i or j:
        if i and j and ref[i - 1] == hyp[j - 1] and cost[i][j] == cost[i - 1][j - 1]:
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((ref[i - 1], None))
            i -= 1
        elif j and cost[i][j] == cost[i][j - 1] + 1:
            pairs.append((None, hyp[j - 1]))
            j -= 1
        else:
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
    return pairs[::-1]


def classify(ref: str, hyp: str, vocabulary: set[str]) -> list[tuple[str, str | None, str | None]]:
    """Each word error of one transcript as (kind, ref word, hyp word); kinds as KINDS."""
    errors: list[tuple[str, str | None, str | None]] = []
    region: list[tuple[str | None, str | None]] = []
    for pair in [*alignment(ref.split(), hyp.split()), ("", "")]:  # a match closes a region
        if pair[0] is not None and pair[0] == pair[1]:
            refs = "".join(r for r, _ in region if r)
            if region and refs == "".join(h for _, h in region if h):
                errors += [("boundary", r, h) for r, h in region]
            else:
                for r, h in region:
                    if r is None:
                        errors.append(("inserted", r, h))
                    elif h is None:
                        errors.append(("deleted", r, h))
                    else:
                        errors.append(("non-word" if h not in vocabulary else "real word", r, h))
            region = []
        else:
            region.append(pair)
    return errors


def band(count: int) -> str:
    for lo, hi in FREQUENCY_BANDS:
        if hi is None or count < hi:
            return f"{lo:,}+" if hi is None else f"{lo:,}-{hi - 1:,}"
    raise AssertionError


def breakdown(
    refs: Sequence[str], hyps: Sequence[str], counts: Counter[str], top: int = 10
) -> dict:
    """The word errors of one held-out set: by kind, by the training count of the reference
    word, and the most frequent ones."""
    errors = [e for r, h in zip(refs, hyps) for e in classify(r, h, set(counts))]
    kinds = Counter(kind for kind, _, _ in errors)
    missed = [r for kind, r, _ in errors if r is not None and kind != "boundary"]
    return {
        "words": sum(len(r.split()) for r in refs),
        "errors": len(errors),
        "kinds": {k: kinds[k] for k in KINDS},
        "bands": dict(Counter(band(counts[w]) for w in missed)),
        "top": [
            [r, h, n, None if r is None else counts[r]]
            for (r, h), n in Counter((r, h) for _, r, h in errors).most_common(top)
        ],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=export.MODEL_DIR)
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--n", type=int, default=None, help="utterances per set (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true", help="record in the model's card")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    counts = Counter(w for t in transcripts(args.data) for w in t.upper().split())
    model = load_model(str(args.model), device="cpu", dtype="float32").model
    results = {}
    for name in HELDOUT_SETS:
        split = Split.load(args.data, [f"heldout-{name}"])
        idx = range(min(args.n or len(split), len(split)))
        refs = [" ".join(split.texts[i].upper().split()) for i in idx]
        hyps = transcribe(model, [split.samples(i) for i in idx], 16_000 * 120)
        results[name] = r = breakdown(refs, hyps, counts) | {"n": len(refs)}
        kinds = ", ".join(f"{k} {v}" for k, v in r["kinds"].items())
        print(f"{name}: {r['errors']} word errors in {r['words']} words: {kinds}")
        print(f"  by training count of the reference word: {r['bands']}")
        print("  most frequent: " + ", ".join(f"{a}->{b} x{n}" for a, b, n, _ in r["top"]))
    if args.write:
        history = json.loads((args.model / "training.json").read_text())
        rounds = history["rounds"]
        history["errors"] = {
            "weights": f"round {rounds[-1]['round']}",
            "training_transcripts": sum(counts.values()),
            "results": results,
        }
        export.update_card(args.model, history)


if __name__ == "__main__":
    main()
