"""A head on the demo CTC model's encoder, fine-tuned for a few minutes on one CPU thread.

Shared by training/speakers.py and training/vad.py: the head's config (the CTC encoder's,
cut to its first `layers` layers), loading those layers' weights, and the loop (AdamW, warmup
then cosine over the time budget, weight average exported), each caller supplying its loss.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.heads import Head
from service.wav2vec2.loading import read_weights, rename
from training.hardware import choose_dtype, machine
from training.optim import update_average


def head_config(init: Path, layers: int, **fields: Any) -> Wav2Vec2Config:
    """The CTC model's config with its first `layers` transformer layers and `fields` set."""
    ctc = Wav2Vec2Config.from_file(init / "config.json")
    if not 1 <= layers <= ctc.num_hidden_layers:
        raise ValueError(f"--layers must be 1..{ctc.num_hidden_layers}")
    return Wav2Vec2Config.from_dict({**ctc.to_dict(), "num_hidden_layers": layers, **fields})


def load_encoder(model: Head, init: Path) -> None:
    """The CTC model's conv front end and first layers into model.wav2vec2; the head stays new.

    The lower layers carry the most speaker and acoustic detail (the top ones are shaped for
    letters), and fewer layers keep the exported model small and the steps fast.
    """
    layers = model.config.num_hidden_layers
    weights = rename(read_weights(init), model.config, pretraining=False)
    keep = {}
    for key, value in weights.items():
        if not key.startswith("wav2vec2."):
            continue  # the CTC head
        if key.startswith("wav2vec2.encoder.layers.") and int(key.split(".")[3]) >= layers:
            continue
        keep[key] = value.float()
    missing, unexpected = model.load_state_dict(keep, strict=False)
    assert not unexpected, unexpected
    assert not [k for k in missing if k.startswith("wav2vec2.")], missing


def describe_init(init: Path, layers: int) -> str:
    rounds = len(json.loads((init / "training.json").read_text())["rounds"])
    return f"conv front end and first {layers} layers of {init.name} (round {rounds})"


def started() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def fit(
    model: Head,
    batches: Iterator[Any],
    loss: Callable[[Head, Any], Tensor],
    *,
    minutes: float,
    lr: float,
    ema: float = 0.99,
    max_steps: int | None = None,
    extra_params: list[Tensor] | None = None,
    dtype_name: str = "auto",
    evaluate: Callable[[Head], str] | None = None,
    eval_every: int = 200,
) -> tuple[Head, dict[str, Any]]:
    """Trains model in place for `minutes` (or max_steps), conv front end frozen; returns
    (weight average, record).

    `extra_params` are trained with the model but not exported (a loss's own scale, say).
    """
    model.train()
    # The conv front end stays as the CTC model trained it: with its parameters frozen,
    # backward stops at the feature projection, which halves a step's cost on a shared CPU.
    model.wav2vec2.feature_extractor.requires_grad_(False)
    averaged = copy.deepcopy(model)
    dtype = choose_dtype(dtype_name)
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    decay = [q for n, q in named if q.ndim >= 2 and "norm" not in n]
    rest = [q for n, q in named if not (q.ndim >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": 0.01},
            {"params": rest + list(extra_params or []), "weight_decay": 0.0},
        ],
        lr=lr,
    )
    print(
        f"{sum(q.numel() for q in model.parameters()) / 1e6:.2f} M parameters; {machine(dtype)}",
        flush=True,
    )
    start, step, warmup = time.monotonic(), 0, 50
    curve = []
    bar = tqdm(unit="step", mininterval=20, file=sys.stdout)
    while True:
        frac = (time.monotonic() - start) / (minutes * 60)
        if frac >= 1 or (max_steps is not None and step >= max_steps):
            break
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            value = loss(model, next(batches))
        opt.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_([q for _, q in named], 1.0)
        rate = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))
        for group in opt.param_groups:
            group["lr"] = rate
        opt.step()
        update_average(averaged, model, min(ema, (1 + step) / (10 + step)))
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{value.item():.3f}", lr=f"{rate:.1e}", refresh=False)
        if evaluate is not None and step % eval_every == 0:
            line = evaluate(averaged)
            curve.append(
                {
                    "steps": step,
                    "minutes": (time.monotonic() - start) / 60,
                    "loss": value.item(),
                    "eval": line,
                }
            )
            tqdm.write(f"[eval] step {step}: {line}", file=sys.stdout)
    bar.close()
    averaged.eval()
    return averaged, {
        "minutes": (time.monotonic() - start) / 60,
        "steps": step,
        "machine": machine(dtype),
        "curve": curve,
    }
