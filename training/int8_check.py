"""demo-ctc's held-out CER with --dtype int8 (or bfloat16) against float32: the model card's
int8 and bf16 lines.

    python -m training.int8_check --data training/data                      # prints the figures
    python -m training.int8_check --data training/data --write              # ... and records them
    python -m training.int8_check --dtype bfloat16 --write                  # the bf16 line

Both load the committed model as the service does (load_model with --dtype float32 / DTYPE)
and transcribe every held-out utterance greedily through the serving forward.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from service.wav2vec2.loading import load_model
from training import export
from training.corpus import Split
from training.data import DATA_DIR, HELDOUT_SETS
from training.forward import evaluate, mean_cer

BUDGET = 16_000 * 60  # padded samples per forward pass


def measure(model_dir: Path, data: Path, n: int | None, other: str = "int8") -> dict:
    sets = {k: Split.load(data, [f"heldout-{k}"]) for k in HELDOUT_SETS}
    hyps: dict[str, list[str]] = {}
    evals = {}
    for dtype in ("float32", other):
        model = load_model(str(model_dir), device="cpu", dtype=dtype).model
        hyps[dtype] = []
        evals[dtype] = evaluate(model, sets, n, BUDGET, hyps[dtype])
    return {
        "fp32_cer": mean_cer(evals["float32"]),
        f"{other}_cer": mean_cer(evals[other]),
        "per_set": {k: {d: evals[d][k]["cer"] for d in evals} for k in sets},
        "n": len(hyps["float32"]),
        "changed": sum(a != b for a, b in zip(hyps["float32"], hyps[other])),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=export.MODEL_DIR)
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--n", type=int, default=None, help="utterances per set (default: all)")
    p.add_argument("--dtype", choices=sorted(export.CPU_DTYPE_CHECKS), default="int8")
    p.add_argument("--write", action="store_true", help="record in the model's card")
    args = p.parse_args()
    torch.set_num_threads(1)
    result = measure(args.model, args.data, args.n, args.dtype)
    print(json.dumps(result, indent=1))
    if args.write:
        history = json.loads((args.model / "training.json").read_text())
        history[f"{args.dtype}_check"] = result
        export.update_card(args.model, history)


if __name__ == "__main__":
    main()
