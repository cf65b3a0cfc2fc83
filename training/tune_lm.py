"""Tunes the demo LM's weights (alpha, beta) on a dev set, never on the held-out test sets.

    python -m training.tune_lm            # prints the grid and the best pair
    python -m training.tune_lm --write    # ... and writes it into the model's attrs.json

The dev set is planned like each held-out set (same sentence source and voices) with another
seed; a dev sentence that is a test sentence, a reserved one or a transcript of any planned
training shard (the LM's own text) is dropped, so the LM has never seen it. It is synthesized
once into training/data/dev/. Decoding is the service's (service.lm, default beam width); the
pair with the lowest WER over all three dev sets wins, CER breaking ties.
"""

from __future__ import annotations

import argparse
import itertools
import json
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from service.lm import BeamOptions, Decoder, beam_decode, load_decoder
from service.wav2vec2.loading import LoadedModel, load_model
from training import export
from training.build_lm import training_texts
from training.data import DATA_DIR, HELDOUT_SETS, SAMPLE_RATE, Utterance, plan_split, write_split
from training.sentences import RESERVED
from training.text import error_rates

DEV_SEED = 1  # the held-out (test) sets use seed 0
ALPHAS = (0.3, 0.5, 0.75, 1.0, 1.5)
BETAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def dev_plans(n: int, test_size: int, train_shards: int) -> dict[str, list[Utterance]]:
    """n dev utterances per held-out kind, disjoint from the test and training sentences."""
    test = {
        u.text
        for kind in HELDOUT_SETS
        for u in plan_split(f"heldout-{kind}", test_size, 0, RESERVED)
    }
    seen = set(training_texts(train_shards, 1000, test_size, 0))  # upper-cased
    plans = {}
    for kind in HELDOUT_SETS:
        # Planned generously: natural sentences come from few templates, so some are dropped.
        plan = plan_split(f"heldout-{kind}", 4 * n, DEV_SEED, RESERVED | test)
        fresh = [u for u in plan if u.text.upper() not in seen][:n]
        if len(fresh) < n:
            raise SystemExit(f"only {len(fresh)} unseen dev sentences of kind {kind}")
        plans[f"dev-{kind}"] = fresh
    return plans


def synthesize(out: Path, plans: dict[str, list[Utterance]]) -> None:
    """Writes the dev splits that are missing (or of another size) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for name, plan in plans.items():
        meta = out / f"{name}.json"
        if not meta.exists() or len(json.loads(meta.read_text())["utterances"]) != len(plan):
            todo.append((out, name, plan))
    with Pool(2) as pool:
        for name, n, seconds in pool.imap_unordered(write_split, todo):
            print(f"{name}: {n} utterances, {seconds:.0f} s", flush=True)


def dev_logits(model: LoadedModel, out: Path, names: list[str]) -> dict[str, tuple[list, list]]:
    """Per dev split: (fp32 logits of every clip, reference texts)."""
    sets = {}
    for name in names:
        meta = json.loads((out / f"{name}.json").read_text())["utterances"]
        audio = np.load(out / f"{name}.npy", mmap_mode="r")
        logits = []
        for m in meta:
            x = np.asarray(audio[m["offset"] : m["offset"] + m["length"]], np.float32) / 32768
            with torch.no_grad():
                logits.append(model.model([torch.from_numpy(model.features(x))]).data.double())
        sets[name] = ([lg.numpy() for lg in logits], [m["text"] for m in meta])
    return sets


def grid(model: LoadedModel, decoder: Decoder, sets: dict[str, tuple[list, list]]) -> list[dict]:
    """CER/WER over all dev sets for every (alpha, beta), best first."""
    rows = []
    for alpha, beta in itertools.product(ALPHAS, BETAS):
        options = BeamOptions(alpha=alpha, beta=beta)
        refs, hyps = [], []
        for logits, texts in sets.values():
            refs += texts
            hyps += [beam_decode(lg, model.tokenizer, decoder, options).text for lg in logits]
        rows.append({"alpha": alpha, "beta": beta, **error_rates(refs, hyps)})
        print(
            f"alpha {alpha:<4} beta {beta:<4} CER {rows[-1]['cer']:.2%} WER {rows[-1]['wer']:.2%}"
        )
    return sorted(rows, key=lambda r: (r["wer"], r["cer"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=export.MODEL_DIR)
    p.add_argument("--out", type=Path, default=DATA_DIR / "dev")
    p.add_argument("--n", type=int, default=200, help="dev utterances per held-out kind")
    p.add_argument("--test-size", type=int, default=200, help="held-out set size to exclude")
    p.add_argument("--train-shards", type=int, default=160, help="the LM's training shards")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write", action="store_true", help="store the best pair in attrs.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    plans = dev_plans(args.n, args.test_size, args.train_shards)
    synthesize(args.out, plans)
    seconds = sum(u["length"] for n in plans for u in _meta(args.out, n)) / SAMPLE_RATE
    print(f"dev set: {sum(map(len, plans.values()))} utterances, {seconds / 60:.1f} min")
    model = load_model(str(args.model), device="cpu", dtype="float32")
    rows = grid(model, load_decoder(args.model), dev_logits(model, args.out, list(plans)))
    best = rows[0]
    print(f"best: alpha {best['alpha']} beta {best['beta']} (dev WER {best['wer']:.2%})")
    if args.write:
        attrs_file = args.model / "language_model" / "attrs.json"
        attrs = json.loads(attrs_file.read_text())
        attrs.update(alpha=best["alpha"], beta=best["beta"])
        attrs_file.write_text(json.dumps(attrs))
        print(f"wrote {attrs_file}")


def _meta(out: Path, name: str) -> list[dict]:
    return json.loads((out / f"{name}.json").read_text())["utterances"]


if __name__ == "__main__":
    main()
