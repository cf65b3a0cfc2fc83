"""Clips packed along time: the batch layout every layer of the model package works on.

A batch is never a padded tensor with a mask: the frames of all clips are concatenated into
one (N, ...) tensor with the frame count of each clip beside it (model.py says why).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Packed:
    """Frames of several clips concatenated along time: data (N, ...) and frames per clip."""

    data: Tensor
    lengths: list[int]

    def split(self) -> list[Tensor]:
        return list(self.data.split(self.lengths))

    def cu_seqlens(self) -> Tensor:
        cu = [0]
        for n in self.lengths:
            cu.append(cu[-1] + n)
        return torch.tensor(cu, dtype=torch.int32, device=self.data.device)

    def with_data(self, data: Tensor) -> Packed:
        return Packed(data, self.lengths)

    def padded(self) -> Tensor:
        """(B, T_max, ...) with zeros after each clip's end."""
        if len(self.lengths) == 1:
            return self.data[None]  # one clip: nothing to pad, no copy
        return nn.utils.rnn.pad_sequence(self.split(), batch_first=True)

    @staticmethod
    def from_padded(padded: Tensor, lengths: list[int]) -> Packed:
        """Inverse of padded(): keeps the first lengths[i] frames of row i."""
        if len(lengths) == 1:
            return Packed(padded[0, : lengths[0]], lengths)
        return Packed(torch.cat([padded[i, :n] for i, n in enumerate(lengths)]), lengths)

    def conv(self, conv: nn.Conv1d, trim: int = 0) -> Tensor:
        """A same-length sequence conv over each clip, zero-padded as the clip alone would be:
        (N, C_in) -> (N, C_out), trimming `trim` frames an even kernel adds at the end.
        Clip by clip, not over the padded batch: padding was most of a mixed batch's work in
        the positional conv (8 clips of 2-15 s: 6,000 frames for 3,230)."""
        out = []
        for clip in self.split():
            y = conv(clip.t()[None])  # (1, C, T + trim)
            out.append(y[0, :, : y.shape[-1] - trim].t())  # (T, C)
        return out[0] if len(out) == 1 else torch.cat(out)


@dataclass
class Frames:
    """What an encoder layer knows of the packed batch besides its (N, D) features."""

    lengths: list[int]
    cu: Tensor  # (B + 1,) int32 cumulative frame counts
    max_len: int
    # Hook for WavLM: layer 0 leaves its relative position bias here for the layers after it
    # (the table lives in layer 0 only): one score per head and distance, (H, 2 max_len - 1).
    position_bias: Tensor | None = None

    @staticmethod
    def of(x: Packed) -> Frames:
        return Frames(x.lengths, x.cu_seqlens(), max(x.lengths))
