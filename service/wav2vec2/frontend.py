"""The convolutional front end: raw samples -> feature frames -> the encoder's width.

Each clip's convs run on its own samples (group norm, where a checkpoint has it, sees that clip
only); clips of one length share a call. A stream window computes only the frames its stream
has not computed yet (resume.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from service.wav2vec2.activations import activation
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.packed import Packed
from service.wav2vec2.resume import Waveform, join_known, split_known

CONV_PIECE = 1024  # output frames per front-end conv call on CPU (ConvLayer._conv_in_pieces)


class ConvLayer(nn.Module):
    """One front-end conv, with the checkpoint's norm: "layer", "group" (first only) or none."""

    def __init__(self, config: Wav2Vec2Config, i: int) -> None:
        super().__init__()
        in_dim = config.conv_dim[i - 1] if i > 0 else 1
        out_dim = config.conv_dim[i]
        self.conv = nn.Conv1d(
            in_dim, out_dim, config.conv_kernel[i], config.conv_stride[i], bias=config.conv_bias
        )
        self.norm = (
            config.feat_extract_norm if (config.feat_extract_norm == "layer" or i == 0) else ""
        )
        if self.norm == "layer":
            self.layer_norm: nn.Module = nn.LayerNorm(out_dim, elementwise_affine=True)
        elif self.norm == "group":
            # num_groups == channels: each channel normalised over time, i.e. over this clip.
            self.layer_norm = nn.GroupNorm(out_dim, out_dim, affine=True)
        self.activation = activation(config.feat_extract_activation)

    def forward(self, x: Tensor) -> Tensor:
        if self.conv.in_channels == 1:
            # The raw-audio conv as one GEMM over strided windows: same sums, ~1.5x faster on
            # CPU than oneDNN's single-input-channel convolution (the 10 s clip's largest op).
            k, s = self.conv.kernel_size[0], self.conv.stride[0]
            cols = x[:, 0].unfold(-1, k, s)  # (B, T', k), a view
            x = self.conv.weight[:, 0] @ cols.transpose(1, 2)  # (B, C, T')
            if self.conv.bias is not None:
                x = x + self.conv.bias[:, None]
        else:
            x = self._conv_in_pieces(x)  # (B, C, T); B clips of one length
        if self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.norm == "group":
            x = self.layer_norm(x)
        return self.activation(x)

    def _conv_in_pieces(self, x: Tensor) -> Tensor:
        """On CPU, the conv on a contiguous input at most CONV_PIECE output frames a call: the
        same sums, faster while a piece's input stays in cache (BENCHMARKS.md, second round)."""
        conv = self.conv
        if not isinstance(conv, nn.Conv1d) or x.device.type != "cpu":  # int8: WindowLinear
            return conv(x)  # (the GPU path as before: not measured there)
        x = x.contiguous()
        k, s = conv.kernel_size[0], conv.stride[0]
        frames = (x.shape[-1] - k) // s + 1
        ends = [min(a + CONV_PIECE, frames) for a in range(0, frames, CONV_PIECE)]
        return torch.cat(
            [conv(x[..., a * s : (b - 1) * s + k]) for a, b in zip([0, *ends], ends)], -1
        )


class FeatureEncoder(nn.Module):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(ConvLayer(config, i) for i in range(len(config.conv_dim)))
        self.step = math.prod(config.conv_stride)  # samples per frame
        self.receptive = 1  # samples per frame's receptive field
        for k, s in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
            self.receptive = (self.receptive - 1) * s + k
        # Every frame from its own samples only (resume.py): no conv normalised over time.
        self.local = all(layer.norm != "group" for layer in self.conv_layers)

    def forward(self, waveforms: Sequence[Waveform]) -> Packed:
        """waveforms: B tensors (T_i,) -> Packed (sum of frames, C); a StreamWindow computes
        only the frames its stream's cache lacks."""
        split = [split_known(w, self.step, self.receptive) for w in waveforms]
        # Clips of equal length (streaming chunks, warm-up) share one conv call.
        by_length: dict[int, list[int]] = {}
        for i, (known, todo) in enumerate(split):
            if known is None or todo.shape[-1] >= self.receptive:
                by_length.setdefault(todo.shape[-1], []).append(i)
        new: list[Tensor | None] = [None] * len(waveforms)
        for indices in by_length.values():
            x = torch.stack([split[i][1] for i in indices])[:, None]  # (b, 1, T)
            for layer in self.conv_layers:
                x = layer(x)
            for j, i in enumerate(indices):
                new[i] = x[j].transpose(0, 1)  # (T_i, C)
        outputs = [join_known(w, self.step, k, n) for w, (k, _), n in zip(waveforms, split, new)]
        data = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return Packed(data, [o.shape[0] for o in outputs])


class FeatureProjection(nn.Module):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        if config.feat_proj_layer_norm:
            d, eps = config.conv_dim[-1], config.layer_norm_eps
            self.layer_norm: nn.Module = nn.LayerNorm(d, eps=eps)
        else:  # HuBERT's feat_proj_layer_norm=False
            self.layer_norm = nn.Identity()
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.layer_norm(x))
