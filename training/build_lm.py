"""Builds the demo model's word 3-gram LM from the training text, in Wav2Vec2ProcessorWithLM's
layout (alphabet.json, language_model/{attrs.json, unigrams.txt, lm.arpa}).

    python -m training.build_lm                                   # -> training/runs/lm/
    python -m training.build_lm --copy-to service/models/demo-ctc

The training sentences are re-planned from training.data (a pure function of the seed and the
shard names, no audio needed); the reserved sentences and every held-out sentence are excluded
exactly as training.data excludes them, and checked again before counting.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from training import arpa
from training.data import HELDOUT_SETS, plan_split
from training.sentences import RESERVED

MODEL_DIR = Path(__file__).parent.parent / "service" / "models" / "demo-ctc"
OUT_DIR = Path(__file__).parent / "runs" / "lm"
# pyctcdecode's alphabet normalisation, so its loader and ours read the same file.
_ALPHABET_NAMES = {"|": " ", "<pad>": "", "<unk>": "⁇"}


def training_texts(shards: int, shard_size: int, heldout_size: int, seed: int) -> list[str]:
    """The transcripts of train-00000... as training.data plans them, upper-cased."""
    heldout = {
        u.text
        for kind in HELDOUT_SETS
        for u in plan_split(f"heldout-{kind}", heldout_size, seed, RESERVED)
    }
    exclude = RESERVED | heldout
    texts = [
        u.text
        for i in range(shards)
        for u in plan_split(f"train-{i:05d}", shard_size, seed, exclude)
    ]
    leaked = exclude.intersection(texts)
    if leaked:
        raise SystemExit(f"held-out sentences in the training plan: {sorted(leaked)[:3]}")
    return [t.upper() for t in texts]


def alphabet(model_dir: Path) -> dict[str, object]:
    vocab: dict[str, int] = json.loads((model_dir / "vocab.json").read_text())
    labels = [_ALPHABET_NAMES.get(t, t) for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    return {"labels": labels, "is_bpe": False}


def write_layout(out: Path, texts: list[str], args: argparse.Namespace) -> None:
    lm_dir = out / "language_model"
    lm_dir.mkdir(parents=True, exist_ok=True)
    (out / "alphabet.json").write_text(json.dumps(alphabet(args.model), ensure_ascii=False))
    attrs = {
        "alpha": args.alpha,
        "beta": args.beta,
        "unk_score_offset": args.unk_score_offset,
        "score_boundary": True,
    }
    (lm_dir / "attrs.json").write_text(json.dumps(attrs))
    words = sorted({w for t in texts for w in t.split()})
    (lm_dir / "unigrams.txt").write_text("".join(w + "\n" for w in words))
    arpa.write_arpa(arpa.build(texts, args.order, args.prune), lm_dir / "lm.arpa")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT_DIR)
    p.add_argument("--copy-to", type=Path, help="also copy the layout here (e.g. a model dir)")
    p.add_argument("--model", type=Path, default=MODEL_DIR, help="its vocab.json -> alphabet")
    p.add_argument("--train-shards", type=int, default=160)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--heldout-size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--prune", type=int, default=1, help="drop top-order n-grams seen <= N times")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=1.5)
    p.add_argument("--unk-score-offset", type=float, default=-10.0)
    args = p.parse_args()
    texts = training_texts(args.train_shards, args.shard_size, args.heldout_size, args.seed)
    write_layout(args.out, texts, args)
    size = (args.out / "language_model" / "lm.arpa").stat().st_size
    print(f"{len(texts):,} training sentences -> {args.out} (lm.arpa {size / 1e6:.1f} MB)")
    if args.copy_to:
        for name in ("alphabet.json", "language_model"):
            src, dst = args.out / name, args.copy_to / name
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                args.copy_to.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        print(f"copied to {args.copy_to}")


if __name__ == "__main__":
    main()
