"""How close two runs of a model are: the comparison the GPU tests make (runs on CPU too)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Closeness:
    rel_err: float  # max |got - ref| over max |ref|, the worst clip
    agreement: float  # fraction of frames (or pooled outputs) whose argmax is the same

    def within(self, rel_err: float, agreement: float) -> bool:
        return self.rel_err <= rel_err and self.agreement >= agreement


def closeness(reference: list[np.ndarray], got: list[np.ndarray]) -> Closeness:
    """Per-clip outputs (frames, C) or (C,) of two runs on the same clips."""
    assert len(reference) == len(got)
    errors, same, total = [], 0, 0
    for r, g in zip(reference, got):
        assert r.shape == g.shape, (r.shape, g.shape)
        r64, g64 = r.astype(np.float64), g.astype(np.float64)
        errors.append(float(np.abs(g64 - r64).max() / max(np.abs(r64).max(), 1e-12)))
        same += int((r64.argmax(-1) == g64.argmax(-1)).sum())
        total += int(np.prod(r.shape[:-1]))
    return Closeness(max(errors), same / total)
