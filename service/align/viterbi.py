"""The best CTC path in O(S sqrt(T)) memory: checkpoints of the scores, then recomputation.

A plain Viterbi keeps a (T, S) table of back-pointers: 180,000 frames (1 hour at 20 ms) by
100,001 states (50,000 tokens) is 18 GB even as uint8. Here the forward pass keeps only the
score vector of every `block`-th frame (float64, S each); the backward pass recomputes one block
at a time from its checkpoint, recording each state's choice as uint8 (0 = stay, 1 or 2 = states
back), and follows the choices back. Memory: T / block checkpoints of 8 S bytes plus block x S
bytes of choices, least at block = sqrt(8 T): ~240 MB for that hour. Time: two forward passes.
Both passes run the same float64 operations, so the recomputed scores, and hence the path, are
exactly those of the full table (tests/test_align_viterbi.py compares them).
"""

from __future__ import annotations

import math

import numpy as np


def default_block(frames: int) -> int:
    """The block length that minimises checkpoints (8 bytes/state) + choices (1 byte/state)."""
    return max(1, math.isqrt(8 * frames))


def best_path(
    emissions: np.ndarray, labels: np.ndarray, skip: np.ndarray, *, block: int | None = None
) -> np.ndarray:
    """(T, C) emission scores, (S,) state columns and skip flags -> (T,) state of each frame.

    The path starts in state 0 or 1 and ends in S - 2 or S - 1; the caller checks that one
    exists (T >= tokens + repeats). Ties go to staying, then to the nearer state.
    """
    frames, states = len(emissions), len(labels)
    block = block or default_block(frames)
    skip_add = np.where(skip, 0.0, -np.inf)[2:]  # (S - 2,) added to scores two states back
    alpha = np.full(states, -np.inf)
    alpha[:2] = emissions[0, labels[:2]]
    checkpoints = [alpha.copy()]
    for t in range(1, frames):
        alpha = _step(alpha, emissions[t, labels], skip_add)
        if t % block == 0:
            checkpoints.append(alpha)
    path = np.empty(frames, np.int64)
    state = states - 1 if alpha[-1] >= alpha[-2] else states - 2
    for b in reversed(range(0, frames - 1, block)):
        last = min(b + block, frames - 1)
        choices = _choices(checkpoints[b // block], emissions[b + 1:last + 1], labels, skip_add)
        for t in range(last, b, -1):
            path[t] = state
            state -= int(choices[t - b - 1, state])
    path[0] = state
    return path


def _step(alpha: np.ndarray, e: np.ndarray, skip_add: np.ndarray) -> np.ndarray:
    """Scores after one more frame: the best of stay, one on, two on, plus the emission."""
    best = alpha.copy()
    np.maximum(best[1:], alpha[:-1], out=best[1:])
    np.maximum(best[2:], alpha[:-2] + skip_add, out=best[2:])
    best += e
    return best


def _choices(
    alpha: np.ndarray, emissions: np.ndarray, labels: np.ndarray, skip_add: np.ndarray
) -> np.ndarray:
    """(frames, S) uint8 steps back of the best predecessor of each state, frame by frame
    from the scores `alpha` of the frame before the first; the same arithmetic as _step."""
    choices = np.zeros((len(emissions), len(alpha)), np.uint8)
    for i, frame in enumerate(emissions):
        best = alpha.copy()
        one, two = alpha[:-1], alpha[:-2] + skip_add
        better = one > best[1:]
        best[1:][better] = one[better]
        choices[i, 1:][better] = 1
        better = two > best[2:]
        best[2:][better] = two[better]
        choices[i, 2:][better] = 2
        best += frame[labels]
        alpha = best
    return choices
