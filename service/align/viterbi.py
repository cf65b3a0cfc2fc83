"""The best CTC path in O(S sqrt(T)) memory: checkpoints of the scores, then recomputation.

A plain Viterbi keeps a (T, S) table of back-pointers: 180,000 frames (1 hour at 20 ms) by
100,001 states (50,000 tokens) is 18 GB even as uint8. Here the forward pass keeps only the
score vector of every `block`-th frame (float64, S each); the backward pass recomputes one block
at a time from its checkpoint, recording each state's choice as uint8 (stay, 1 or 2 states
back), and follows the choices back. Memory: T / block checkpoints of 8 S bytes plus block x S
bytes of choices, least at block = sqrt(8 T): ~240 MB for that hour. Time: two forward passes.
Both passes run the same float64 operations, so the recomputed scores, and hence the path, are
exactly those of the full table (tests/test_align_viterbi.py compares them).

Each frame updates only the states that are live: reachable from the start (s <= 2 t + 1) and
still able to reach the end (s >= S - 2 - 2 (T - 1 - t)); a dead state keeps a stale score that
no live state reads. This saves a quarter of the work when the text is dense (T ~ 2 S).
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
    frames = len(emissions)
    block = block or default_block(frames)
    trellis = _Recursion(labels, skip, frames)
    alpha = np.full(len(labels), -np.inf)
    alpha[:2] = emissions[0, labels[:2]]
    checkpoints = [alpha.copy()]
    spare = np.full(len(labels), -np.inf)
    for t in range(1, frames):
        trellis.step(alpha, emissions[t], t, out=spare)
        alpha, spare = spare, alpha
        if t % block == 0:
            checkpoints.append(alpha.copy())
    path = np.empty(frames, np.int64)
    state = len(labels) - 1 if alpha[-1] >= alpha[-2] else len(labels) - 2
    choices = np.empty((min(block, frames - 1), len(labels)), np.uint8)  # one block, reused
    for b in reversed(range(0, frames - 1, block)):
        last = min(b + block, frames - 1)
        trellis.choices(checkpoints[b // block], emissions, b + 1, last + 1, out=choices)
        for t in range(last, b, -1):
            path[t] = state
            state -= min(int(choices[t - b - 1, state]), 2)
    path[0] = state
    return path


class _Recursion:
    """One frame of the recursion over the live states, with or without recording choices."""

    def __init__(self, labels: np.ndarray, skip: np.ndarray, frames: int) -> None:
        self.labels = labels
        self.skip_add = np.where(skip, 0.0, -np.inf)  # added to the score two states back
        self.frames = frames
        self.two = np.empty(len(labels))  # scratch: scores two states back
        # Gathering S emissions per frame is the costliest operation: token states gather,
        # blank states (all one column unless the star is on) add a scalar.
        self.token_labels = labels[1::2]
        blanks = labels[0::2]
        self.blank_label = int(blanks[0]) if (blanks == blanks[0]).all() else None
        self.blank_labels = blanks

    def live(self, t: int) -> tuple[int, int]:
        """[lo, hi): states reachable at frame t from which the last two remain reachable."""
        states = len(self.labels)
        return max(0, states - 2 - 2 * (self.frames - 1 - t)), min(states, 2 * t + 2)

    def step(self, alpha: np.ndarray, frame: np.ndarray, t: int, out: np.ndarray) -> None:
        """Scores after frame t into `out`: the best of stay, one on, two on, plus the
        emission. Only live states are written: above them `out` holds -inf from two frames
        before, below them stale scores no live state reads."""
        lo, hi = self.live(t)
        a, b = max(lo, 1), max(lo, 2)
        out[lo] = alpha[lo]
        np.maximum(alpha[a:hi], alpha[a - 1 : hi - 1], out=out[a:hi])
        two = np.add(alpha[b - 2 : hi - 2], self.skip_add[b:hi], out=self.two[b:hi])
        np.maximum(out[b:hi], two, out=out[b:hi])
        self.emit(out, frame, lo, hi)

    def emit(self, scores: np.ndarray, frame: np.ndarray, lo: int, hi: int) -> None:
        """Adds each live state's emission of this frame to its score."""
        frame = frame.astype(np.float64)  # 34 casts here, not S in the additions
        even, odd = lo + lo % 2, lo | 1
        evens, odds = range(even // 2, (hi + 1) // 2), range(odd // 2, hi // 2)
        blank = (
            frame[self.blank_label]
            if self.blank_label is not None
            else frame.take(self.blank_labels[evens.start : evens.stop])
        )
        scores[even:hi:2] += blank
        scores[odd:hi:2] += frame.take(self.token_labels[odds.start : odds.stop])

    def choices(
        self, alpha: np.ndarray, emissions: np.ndarray, start: int, stop: int, out: np.ndarray
    ) -> None:
        """Rows 0..stop-start-1 of `out` (uint8, S wide): the code of each live state's best
        predecessor at frames start..stop-1, from the scores `alpha` of frame start - 1, by the
        arithmetic of step: code = (one on beats stay) + 2 (two on beats both); steps back =
        min(code, 2). Codes of dead states are left as they were: no path goes through one."""
        buffers = [alpha.copy(), alpha.copy()]  # -inf above the live states, as in best_path
        beats = np.empty(len(alpha), np.uint8)
        for i, t in enumerate(range(start, stop)):
            lo, hi = self.live(t)
            a, b = max(lo, 1), max(lo, 2)
            row, best = out[i], buffers[i % 2]
            row[lo:a] = 0
            np.greater(alpha[a - 1 : hi - 1], alpha[a:hi], out=row[a:hi].view(np.bool_))
            best[lo] = alpha[lo]
            np.maximum(alpha[a:hi], alpha[a - 1 : hi - 1], out=best[a:hi])
            two = np.add(alpha[b - 2 : hi - 2], self.skip_add[b:hi], out=self.two[b:hi])
            np.greater(two, best[b:hi], out=beats[b:hi].view(np.bool_))
            np.add(row[b:hi], beats[b:hi], out=row[b:hi])
            np.add(row[b:hi], beats[b:hi], out=row[b:hi])
            np.maximum(best[b:hi], two, out=best[b:hi])
            self.emit(best, emissions[t], lo, hi)
            alpha = best
