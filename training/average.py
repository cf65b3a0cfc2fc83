"""Average the weights of demo-ctc rounds (a uniform "model soup"), and score the average.

    python -m training.average service/models/demo-ctc training/checkpoints/demo-ctc-round7 \
        --out training/runs/average

Rounds warm-started one from another stay in one basin of the loss, so their mean is a model
too, and often a better one than any of them (Wortsman et al. 2022, "Model soups"; weight
averaging along one run is what the EMA of training/train.py already does). The mean is taken
in float32 over the committed fp16 weights and rounded back to fp16; what is scored on the
whole held-out sets is exactly what would ship.

The output is a complete model directory: the newest input's rounds plus an entry for the
average (no steps; its scores), the first input's config.json unchanged (it carries the
service's window hints), and the card rendered from that record. Shipping it is copying it over
service/models/demo-ctc, as with a trained round.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.heads import Wav2Vec2ForCTC
from service.wav2vec2.loading import read_weights
from training import export
from training.corpus import Split
from training.data import DATA_DIR, HELDOUT_SETS, SAMPLE_RATE
from training.forward import evaluate
from training.hardware import machine
from training.weights import assign_weights

BUDGET = 30 * SAMPLE_RATE  # padded samples per evaluation batch, as in training


def last_round(model_dir: Path) -> int:
    return json.loads((model_dir / "training.json").read_text())["rounds"][-1]["round"]


def average(dirs: list[Path]) -> dict[str, torch.Tensor]:
    """The inputs' weights (checkpoint names, as stored), averaged in float32, stored dtype."""
    stored = [read_weights(d) for d in dirs]
    keys = stored[0].keys()
    if any(s.keys() != keys for s in stored):
        raise SystemExit("the models do not have the same weights: not one architecture")
    return {
        k: (sum(s[k].float() for s in stored) / len(stored)).to(stored[0][k].dtype) for k in keys
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("models", type=Path, nargs="+", help="demo-ctc model directories (>= 2)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--n", type=int, default=None, help="utterances per set (default: all)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if len(args.models) < 2:
        p.error("an average needs at least two models")
    torch.set_num_threads(args.threads)
    start = time.monotonic()

    rounds = [last_round(d) for d in args.models]
    newest = args.models[rounds.index(max(rounds))]
    history = {
        k: v
        for k, v in json.loads((newest / "training.json").read_text()).items()
        if k in ("parameters", "layers", "recipe", "data", "rounds")  # scores belong to weights
    }
    config = Wav2Vec2Config.from_file(args.models[0] / "config.json")
    model = Wav2Vec2ForCTC(config)
    assign_weights(model, average(args.models))  # the fp16-rounded average: what ships

    sets = {k: Split.load(args.data, [f"heldout-{k}"]) for k in HELDOUT_SETS}
    scores = evaluate(model, sets, args.n, BUDGET)
    names = ", ".join(str(r) for r in sorted(rounds))
    entry: dict[str, Any] = {
        "round": len(history["rounds"]) + 1,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "init": f"average of rounds {names}",
        "averaged": [str(d) for d in args.models],
        "command": "python -m training.average " + " ".join(sys.argv[1:] if argv is None else argv),
        "eval_n": args.n,
        "minutes": round((time.monotonic() - start) / 60, 1),
        "steps": 0,
        "audio_hours": 0.0,
        "status": "weight average",
        "curve": [],
        "eval": scores,
    }
    history["rounds"] = [*history["rounds"], entry]
    export.save(model, config, args.out, history)
    shutil.copy(args.models[0] / "config.json", args.out / "config.json")
    print(
        f"[average of rounds {names}] "
        + ", ".join(
            f"{k} CER {100 * v['cer']:.2f}% WER {100 * v['wer']:.2f}%" for k, v in scores.items()
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
