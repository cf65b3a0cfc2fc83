"""Word starts moved back to the speech onset that a CTC path reaches late.

A CTC model emits blank over the first frames of a word and spikes its first letter at the end
of the first phoneme, so the best path starts words late while it ends them about right: on
demo-ctc with espeak-ng speech, starts come 108 ms late on average and ends 17 ms late
(benchmarks/bench_align.py, the calibration sentences). Over those onset frames the blank still
wins, but by less: the non-blank log-probability of a word's first three frames has a median of
-7.5 there, against -10.7 in the silence between words (where the model also spikes its word
delimiter now and then). So each word's start moves back over the run of frames just before it
whose non-blank log-probability exceeds ONSET_LOG_PROB, never into the previous word and by at
most MAX_ONSET_FRAMES; on the calibration sentences the run ends the move for 150 of 173 words
and the cap for 23. Ends are left on the path.

Calibrated on 24 held-out sentences that the boundary test does not use (bench_align.py
--sections calibration): thresholds from -11 to -9 bring their mean boundary error from 73 ms
to 42-46 ms; -10 is the best of the sweep from -13 to -6. A model whose blank is less sure of
silence (a random checkpoint) moves its starts by the cap, which MAX_ONSET_FRAMES (200 ms at a
20 ms stride) keeps bounded.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from service.align.spans import Alignment

ONSET_LOG_PROB = -10.0
MAX_ONSET_FRAMES = 10


def onset_starts(
    starts: np.ndarray, floors: np.ndarray, nonblank: np.ndarray, threshold: float, most: int
) -> np.ndarray:
    """(W,) path starts, (W,) the earliest frame each may take, (T,) non-blank log-probability
    -> (W,) starts moved back over the run of frames above `threshold` before them."""
    frames = np.arange(len(nonblank))
    last_quiet = np.maximum.accumulate(np.where(nonblank <= threshold, frames, -1))  # (T,)
    run_start = last_quiet[np.maximum(starts - 1, 0)] + 1  # first frame of the run up to start - 1
    moved = np.maximum(np.maximum(run_start, floors), starts - most)
    return np.where(starts > 0, np.minimum(moved, starts), starts)


def with_onsets(
    alignment: Alignment,
    blank_log_probs: np.ndarray,
    threshold: float = ONSET_LOG_PROB,
    most: int = MAX_ONSET_FRAMES,
) -> Alignment:
    """`alignment` with each word's start, and its first character's, at its onset; scores
    stay those of the path."""
    if not alignment.words:
        return alignment
    with np.errstate(divide="ignore"):  # blank probability 1: non-blank log-probability -inf
        nonblank = np.log(-np.expm1(blank_log_probs.astype(np.float64)))  # log(1 - p_blank)
    starts = np.array([w.start for w in alignment.words])
    floors = np.array([0] + [w.end for w in alignment.words[:-1]])
    moved = onset_starts(starts, floors, nonblank, threshold, most)
    words = [replace(w, start=int(s)) for w, s in zip(alignment.words, moved)]
    chars, seen = [], set()
    for c in alignment.chars:
        chars.append(c if c.word in seen else replace(c, start=int(moved[c.word])))
        seen.add(c.word)
    return replace(alignment, words=words, chars=chars)
