"""Long clips cut into model windows: in pauses, and with overlap where speech runs on.

A frame task's window (transcription, frame labels) keeps only the frames between its two cuts,
and sees some context either side of them. Cut at fixed places (transformers' ASR pipeline's
chunk and stride), a window starts and ends in the middle of a sentence, and the model hears
those broken edges even where the cut is far from the words it keeps: a model trained on whole
utterances spells worse there. A clip longer than one window is therefore cut in the middle of
the last pause each window reaches, so windows hold whole stretches of speech with the pause's
silence either side, as an utterance sent alone does, and no word is split; only where a
window reaches no pause does a cut fall in speech, with `stride` of context on each side. A
clip that fits in one window is never cut. A cut in a pause is between words: the engine puts
the word delimiter there (engine.py, pauses_between_words). Chosen on demo-ctc's long
recordings of unseen voices, greedy, in WER points over the same sentences sent one by one:
fixed cuts 3.5, the last pause 0.2, every pause -0.2; the last two are level within noise, and
the last pause keeps the longest context (what larger models trained on long utterances want)
in the fewest windows. Its model card has the figures.

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
BLOCK = 4096  # frames squared at a time


@dataclass(frozen=True)
class Window:
    """A slice of a clip sent to the model; keep frames [keep_from, keep_to) of its output."""

    start: int  # first sample in the clip
    end: int
    keep_from: int = 0
    keep_to: int | None = None
    pause: bool = False  # the cut at keep_to is in a pause

    def cut(self, step: int) -> int | None:
        """The clip frame at which the next window's kept frames start (None: the last)."""
        return None if self.keep_to is None else self.start // step + self.keep_to


def pauses(samples: np.ndarray, step: int, min_frames: int) -> list[tuple[int, int]]:
    """The clip's pauses as [first, end) frame ranges of `step` samples, at least min_frames."""
    n = len(samples) // step
    if n == 0:
        return []
    frames = samples[: n * step].reshape(n, step)
    # By blocks: an hour's float64 squares at once would take 460 MB.
    energy = np.concatenate(
        [
            np.sqrt(np.mean(np.square(frames[i : i + BLOCK], dtype=np.float64), axis=1))
            for i in range(0, n, BLOCK)
        ]
    )
    floor = float(np.percentile(energy, FLOOR_PERCENTILE))
    speech = float(np.percentile(energy, SPEECH_PERCENTILE))
    quiet = energy <= max(floor * FLOOR_RATIO, speech * 10 ** (-SPEECH_DB / 20))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_frames]


def frame_windows(
    samples: np.ndarray, chunk: int, stride: int, step: int, rate: int
) -> list[Window]:
    """Windows of at most `chunk` samples whose kept frames cover the clip's frames once, in
    order: a clip that fits is one window; a longer one is cut in the last pause each window
    reaches, and where it reaches none, in speech with `stride` of context each side. chunk and
    stride are whole frames of `step` samples, stride under chunk / 2; `rate` samples a second."""
    n = len(samples)
    if n <= chunk:
        return [Window(0, n)]
    cuts = _cuts(
        pauses(samples, step, round(MIN_PAUSE_SECONDS * rate / step)), n // step, stride // step
    )
    windows: list[Window] = []
    start = keep = i = 0  # the window's first sample; its first kept frame; the next pause
    while n - start > chunk:
        first, limit = start // step, (start + chunk) // step  # the window's frames at most
        while i < len(cuts) and (cuts[i][0] < keep or cuts[i][1] <= keep):
            i += 1
        last = i  # past the last pause this window reaches
        while last < len(cuts) and cuts[last][1] < limit:
            last += 1
        pause = last > i
        if pause:
            _, cut, ctx = cuts[last - 1]
            # The window ends at least the frame past its last kept one (receptive field).
            end, after = min(cut + ctx, limit) * step, (cut - ctx) * step
        else:  # speech for a whole window
            cut = limit - stride // step
            end, after = start + chunk, cut * step - stride
        windows.append(Window(start, end, keep - first, cut - first, pause))
        start, keep = after, cut
    windows.append(Window(start, n, keep - start // step, None))
    return windows


def _cuts(found: list[tuple[int, int]], frames: int, stride: int) -> list[tuple[int, int, int]]:
    """(pause's first frame, cut, context each side) for each pause, in frames. A cut is in the
    pause's middle and keeps its silence as context on both sides, up to `stride`, less its
    edge frames (part speech). Silence at the clip's ends is cut only when it outlasts two
    strides, `stride` from its speech: the window of speech then does not have to carry it."""
    out = []
    for a, b in found:
        if a == 0 or b == frames:
            if b - a > 2 * stride:
                out.append((a, b - stride if a == 0 else a + stride, stride))
        else:
            out.append((a, (a + b) // 2, max(1, min((b - a) // 2 - 1, stride))))
    return out


def pooled_windows(n: int, chunk: int, step: int) -> list[Window]:
    """Equal windows of at most `chunk` samples, on the frame grid, partitioning the clip."""
    if n <= chunk:
        return [Window(0, n)]
    parts = math.ceil(n / chunk)
    size = math.ceil(n / parts / step) * step
    return [Window(s, min(s + size, n)) for s in range(0, n, size)]
