"""Optimizer, learning-rate schedule and the weight average that is evaluated and exported."""

from __future__ import annotations

import argparse
import math

import torch


@torch.no_grad()
def update_average(averaged: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """averaged <- decay * averaged + (1 - decay) * model, parameter by parameter."""
    torch._foreach_lerp_(list(averaged.parameters()), list(model.parameters()), 1 - decay)


def lr_at(step: int, frac: float, args: argparse.Namespace) -> float:
    """Linear warmup over steps, then cosine over the fraction of the time budget spent."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.final_lr + 0.5 * (args.lr - args.final_lr) * (1 + math.cos(math.pi * min(frac, 1)))


def optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
