"""Ship a demo-ctc candidate (a round's export, or an average): its weights and record replace
the committed ones, the rest of service/models/demo-ctc stays.

    python -m training.ship training/runs/roundN/export

What stays: the LM (language_model/, alphabet.json), config.json (it names the service's
window shape for this model), the tokenizer files, and the parts of training.json that say
which weights they measured (the report-only lexicon table, the window sweep, the word-error
breakdown). Long-audio figures move to "<decoder>, round K" entries, K the round being
replaced. Scores that belong to the weights (decoders table, int8 and bf16 checks) are
dropped; the commands that measure them again are printed, and the card is rendered from the
merged record.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from training import export

FROM_CANDIDATE = ("rounds", "parameters", "layers", "recipe", "data", "fp16_check")
KEPT = (
    "lexicon",
    "longform_windows",
    "longform_cuts",
    "errors",
)  # each names the weights it measured
REMEASURE = [
    "python -m training.export --check service/models/demo-ctc",
    "python -m training.longform --recordings 8 --write",
    "python -m training.longform --recordings 8 --decoder beam --write",
    "python -m training.int8_check --write",
    "python -m training.int8_check --dtype bfloat16 --write",
    "python benchmarks/bench_lm.py --threads 1 --n 200 --speed-n 0 --write",
    "python -m training.errors --write",
]


def merged(shipped: dict, candidate: dict) -> dict:
    """The candidate's record, with what outlives the shipped weights carried over."""
    history = {k: candidate[k] for k in FROM_CANDIDATE if k in candidate}
    history |= {k: shipped[k] for k in KEPT if k in shipped}
    replaced = shipped["rounds"][-1]["round"]
    longform = {
        (k if "," in k else f"{k}, round {replaced}"): v
        for k, v in shipped.get("longform", {}).items()
    }
    if longform:
        history["longform"] = longform
    return history


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("candidate", type=Path)
    p.add_argument("--model", type=Path, default=export.MODEL_DIR)
    args = p.parse_args(argv)
    shipped = json.loads((args.model / "training.json").read_text())
    candidate = json.loads((args.candidate / "training.json").read_text())
    shutil.copyfile(args.candidate / "model.safetensors", args.model / "model.safetensors")
    export.update_card(args.model, merged(shipped, candidate))
    print(f"shipped round {candidate['rounds'][-1]['round']}; now measure again:")
    print("\n".join(f"  {c}" for c in REMEASURE))


if __name__ == "__main__":
    main()
