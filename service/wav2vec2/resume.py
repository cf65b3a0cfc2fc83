"""A stream's feature-encoder frames, computed once and reused by its next windows.

A live stream runs the model on overlapping windows [left context | chunk | lookahead], so
each second of audio passes the front end about (left + chunk + lookahead) / chunk times. A
front end whose every conv normalises per frame (feat_extract_norm "layer") is local: output
frame j of a clip is a function of samples [j * step, j * step + receptive field) only. A
stream's windows start on frame boundaries, so frame j of the window starting at stream frame
a is stream frame a + j in every window, and a window needs to compute only the frames that
no earlier window did; the rest come from `FrontEndCache`.

Only where nothing upstream of a frame looks at the whole window (`reusable`): not with
per-clip normalisation of the samples (do_normalize), a group-normed first conv (normalised
over the window's time axis) or int8 (a scale per piece computed). The reused frames are
the same arithmetic on the same samples; the conv library may still pick another algorithm
for another width, which moves the last bits (tests/test_resume.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from service.wav2vec2.features import FeatureExtractor


@dataclass
class FrontEndCache:
    """One stream's latest feature-encoder frames: stream frames [start, start + len(frames))."""

    start: int = 0
    frames: Tensor | None = None

    def from_frame(self, first: int) -> Tensor | None:
        """The cached frames from stream frame `first` on; None when `first` is not cached."""
        if self.frames is None or not self.start <= first < self.start + len(self.frames):
            return None
        return self.frames[first - self.start :]

    def keep(self, first: int, frames: Tensor) -> None:
        """A window's frames (stream frames first, first + 1, ...), if they reach further."""
        end = self.start + (0 if self.frames is None else len(self.frames))
        if first + len(frames) >= end:
            self.start, self.frames = first, frames


@dataclass(frozen=True)
class StreamWindow:
    """A stream window for the model: its samples, the stream sample they start at (a frame
    boundary), and the stream's cache."""

    samples: Tensor
    start: int
    cache: FrontEndCache


Waveform = Tensor | StreamWindow  # what the model takes per clip


def split_known(w: Waveform, step: int, receptive: int) -> tuple[Tensor | None, Tensor]:
    """(the cached frames a window starts with, or None; the samples left to compute), for a
    front end of `step` samples per frame and `receptive` samples per frame's field."""
    if not isinstance(w, StreamWindow):
        return None, w
    known = w.cache.from_frame(w.start // step)
    if known is None:
        return None, w.samples
    # The cache may reach past this window (a longer window of the stream ran first).
    known = known[: max(0, (len(w.samples) - receptive) // step + 1)]
    return known, w.samples[len(known) * step :]


def join_known(w: Waveform, step: int, known: Tensor | None, new: Tensor | None) -> Tensor:
    """A window's frames: the cached ones, then the new ones; kept for the stream's next."""
    parts = [p for p in (known, new) if p is not None]
    frames = parts[0] if len(parts) == 1 else torch.cat(parts)
    if isinstance(w, StreamWindow):
        w.cache.keep(w.start // step, frames)
    return frames


Resume = tuple[int, FrontEndCache]  # a stream window's start sample and its stream's cache


def model_inputs(
    clips: Sequence[np.ndarray],
    features: FeatureExtractor,
    like: Tensor,
    resume: Sequence[Resume | None] = (),
) -> list[Waveform]:
    """Raw clips -> the model's inputs on `like`'s device and dtype, each normalised over
    itself (where the checkpoint asks); a clip with a Resume becomes a StreamWindow."""
    out: list[Waveform] = []
    for i, c in enumerate(clips):
        x = torch.from_numpy(features(c)).to(like.device, like.dtype)
        r = resume[i] if i < len(resume) else None
        out.append(x if r is None else StreamWindow(x, *r))
    return out
