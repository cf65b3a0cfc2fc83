"""Long clips cut into model windows: at pauses where the clip has them, with overlap where not.

A frame task's window (transcription, frame labels) keeps only the frames between its two cuts,
and sees some context either side of them. Cut at fixed places, a window starts and ends in the
middle of a sentence, and the model hears those broken edges even when the cut itself is far
from any word it keeps: a model trained on whole utterances spells worse there. So a cut goes in
the middle of a pause when the window has one: the windows then hold whole stretches of speech,
each seeing the pause's silence on either side as a single utterance does, and no word is split.
Where speech runs on for a whole window, the cut falls where it must, with `stride` of context
on each side (transformers' ASR pipeline's chunk and stride).

Pooled tasks (classification, embeddings) cut the clip into equal parts, pooled by length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A pause: this long below the clip's quiet level. Shorter gaps are inside words (stop closures,
# which last under 0.15 s) or between words of a phrase, where a cut would still split speech.
MIN_PAUSE_SECONDS = 0.3
# Quiet: 6 dB above the clip's floor (its 10th-percentile frame energy: pauses or noise), or
# 40 dB under its speech (95th percentile) where the floor is digital silence.
FLOOR_PERCENTILE, FLOOR_RATIO = 10, 2.0
SPEECH_PERCENTILE, SPEECH_DB = 95, 40.0


@dataclass(frozen=True)
class Window:
    """A slice of a clip sent to the model; keep frames [keep_from, keep_to) of its output."""

    start: int  # first sample in the clip
    end: int
    keep_from: int = 0
    keep_to: int | None = None


def pauses(samples: np.ndarray, step: int, min_frames: int) -> list[tuple[int, int]]:
    """The clip's pauses as [first, end) frame ranges of `step` samples, at least min_frames."""
    n = len(samples) // step
    if n == 0:
        return []
    frames = samples[: n * step].astype(np.float64).reshape(n, step)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    floor = float(np.percentile(energy, FLOOR_PERCENTILE))
    speech = float(np.percentile(energy, SPEECH_PERCENTILE))
    quiet = energy <= max(floor * FLOOR_RATIO, speech * 10 ** (-SPEECH_DB / 20))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_frames]


def frame_windows(
    samples: np.ndarray, chunk: int, stride: int, step: int, rate: int
) -> list[Window]:
    """Windows of at most `chunk` samples whose kept frames cover the clip's frames once, in
    order: a clip that fits is one window; a longer one is cut in every pause, and where speech
    runs on for a whole window, with `stride` of context each side. chunk and stride are whole
    frames of `step` samples, stride under chunk / 2; `rate` samples a second."""
    n = len(samples)
    if n <= chunk:
        return [Window(0, n)]
    found = pauses(samples, step, max(1, round(MIN_PAUSE_SECONDS * rate / step)))
    # Leading and trailing silence is no place for a cut: it would make a window of nothing.
    found = [(a, b) for a, b in found if a > 0 and b < n // step]
    windows: list[Window] = []
    start = keep = 0  # the window's first sample; its first kept frame in the clip
    while True:
        first, limit = start // step, (start + chunk) // step  # the window's frames at most
        # The next pause after the kept speech, cut in its middle; its silence is context on
        # both sides, up to `stride`, less its edge frames (part speech); the window ends at
        # least the one frame past its last kept frame that the receptive field needs.
        pause = next(((a, b) for a, b in found if a > keep and (a + b) // 2 < limit), None)
        if pause is not None:
            a, b = pause
            cut, ctx = (a + b) // 2, max(1, min((b - a) // 2 - 1, stride // step))
            end, after = min(cut + ctx, limit) * step, (cut - ctx) * step
        elif n - start <= chunk:
            break
        else:
            cut = limit - stride // step
            end, after = start + chunk, cut * step - stride
        windows.append(Window(start, end, keep - first, cut - first))
        start, keep = after, cut
    windows.append(Window(start, n, keep - start // step, None))
    return windows


def pooled_windows(n: int, chunk: int, step: int) -> list[Window]:
    """Equal windows of at most `chunk` samples, on the frame grid, partitioning the clip."""
    if n <= chunk:
        return [Window(0, n)]
    parts = math.ceil(n / chunk)
    size = math.ceil(n / parts / step) * step
    return [Window(s, min(s + size, n)) for s in range(0, n, size)]
