"""The convolutional front end: raw samples -> feature frames -> the encoder's width.

Each clip's convs run on its own samples (group norm, where a checkpoint has it, sees that clip
only); clips of one length share a call. A stream window computes only the frames its stream
has not computed yet (resume.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from service.wav2vec2.activations import activation
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.packed import Packed
from service.wav2vec2.resume import Waveform, join_known, split_known

# in_pieces: the first PIECE_DEPTH layers in pieces of PIECE_FRAMES output frames of the last
# of them (a 10 s clip at 512 channels: their outputs are 64, 32, 16, 8 MB whole), the rest
# whole (4 MB and less). Measured on base front ends against other depths and sizes, 1.5-30 s:
# 3/512 and 7/64 within a few % on 10 s, 7/64 11% slower on 3 s (small GEMMs deep down).
PIECE_DEPTH = 4
PIECE_FRAMES = 256
STATS_PIECE = 1024  # first-layer frames per call of a group norm's statistics pass


class ConvLayer(nn.Module):
    """One front-end conv, with the checkpoint's norm: "layer", "group" (first only) or none."""

    def __init__(self, config: Wav2Vec2Config, i: int) -> None:
        super().__init__()
        in_dim = config.conv_dim[i - 1] if i > 0 else 1
        out_dim = config.conv_dim[i]
        self.kernel, self.stride = config.conv_kernel[i], config.conv_stride[i]
        self.conv = nn.Conv1d(in_dim, out_dim, self.kernel, self.stride, bias=config.conv_bias)
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
        """The whole input at once: the GPU's path, and the CPU's for the layers after
        in_pieces' depth."""
        if self.conv.in_channels == 1:
            # The raw-audio conv as one GEMM over strided windows: same sums, ~1.5x faster on
            # CPU than oneDNN's single-input-channel convolution on a whole clip.
            cols = x[:, 0].unfold(-1, self.kernel, self.stride)  # (B, T', k), a view
            x = self.conv.weight[:, 0] @ cols.transpose(1, 2)  # (B, C, T')
            if self.conv.bias is not None:
                x = x + self.conv.bias[:, None]
        else:
            x = self.conv(x)
        return self.after_conv(x)

    def after_conv(self, x: Tensor) -> Tensor:
        """The norm and activation of this layer's conv output x: (B, C, T)."""
        if self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.norm == "group":
            x = self.layer_norm(x)
        return self.activation(x)


def in_pieces(layers: list[ConvLayer], x: Tensor) -> Tensor:
    """The front end with its first PIECE_DEPTH layers in pieces of PIECE_FRAMES output frames:
    each piece is computed from the piece of the layer below that it reads (overlaps of kernel
    - stride frames computed twice: under 1%), so none of those layers' outputs ever exists
    whole and every piece stays in cache. Whole-clip tensors over glibc's 32 MiB mmap ceiling
    are fresh mappings whose pages fault in on every call: on this project's CPU that made the
    first layer (64 MB for a 10 s clip at 512 channels) 4x slower than the same arithmetic in
    cache (BENCHMARKS.md, "Front end in pieces"). A group norm's per-channel statistics need
    the whole clip: a pass of the first conv alone sums them first (group_norm_affine). int8's
    convs quantise each piece with its own scale (one per GEMM call). x: (B, 1, T) on the CPU
    -> (B, C, frames)."""
    first = layers[0]
    depth = min(PIECE_DEPTH, len(layers))
    frames = (x.shape[-1] - first.kernel) // first.stride + 1
    for layer in layers[1:depth]:
        frames = (frames - layer.kernel) // layer.stride + 1
    affine = group_norm_affine(first, x) if first.norm == "group" else None

    def out(i: int, a: int, b: int) -> Tensor:  # layer i's frames [a, b), activated
        layer = layers[i]
        start, stop = a * layer.stride, (b - 1) * layer.stride + layer.kernel
        if i == 0:
            # oneDNN's conv, not forward's GEMM: on pieces in cache it was 7-17% faster over
            # the front end here (Zen 5), while the GEMM wins on whole clips.
            y = layer.conv(x[..., start:stop])
            if affine is not None:  # the group norm, its statistics known
                return layer.activation(torch.addcmul(affine[1], y, affine[0]))
            return layer.after_conv(y)
        return layer.after_conv(layer.conv(out(i - 1, start, stop).contiguous()))

    last = depth - 1
    pieces = [out(last, a, min(a + PIECE_FRAMES, frames)) for a in range(0, frames, PIECE_FRAMES)]
    y = pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1)
    for layer in layers[depth:]:
        y = layer(y)
    return y


def group_norm_affine(first: ConvLayer, x: Tensor) -> tuple[Tensor, Tensor]:
    """A first-layer group norm (one group per channel) as a scale and shift per clip and
    channel, (B, C, 1) each, from the first conv's output over the whole clip, computed
    STATS_PIECE frames at a time. Sums of (y - shift) per piece in float32, shift = the first
    piece's channel means (no cancellation in E[d^2] - E[d]^2), accumulated over pieces in
    float64: within 3e-8 of float64 throughout, 6x faster than float64 pieces."""
    conv, norm = first.conv, first.layer_norm
    assert isinstance(norm, nn.GroupNorm)
    frames = (x.shape[-1] - first.kernel) // first.stride + 1
    sums = torch.zeros(x.shape[0], norm.num_channels, dtype=torch.float64)
    squares = torch.zeros_like(sums)
    shift = torch.zeros(x.shape[0], norm.num_channels, 1)
    for a in range(0, frames, STATS_PIECE):
        b = min(a + STATS_PIECE, frames)
        y = conv(x[..., a * first.stride : (b - 1) * first.stride + first.kernel]).float()
        if a == 0:
            shift = y.mean(-1, keepdim=True)
        d = y.sub_(shift)
        sums += d.sum(-1)
        squares += d.square().sum(-1)
    offset = sums / frames
    mean = shift[..., 0].double() + offset
    var = (squares / frames - offset.square()).clamp_min(0)
    scale = (var + norm.eps).rsqrt() * norm.weight.double()
    shift_out = norm.bias.double() - mean * scale
    return scale[..., None].to(x.dtype), shift_out[..., None].to(x.dtype)


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
        # Clips of one length share a call; int8 turns this off (quantize_int8): a clip's
        # activation scales must not see its neighbours, nor its rounding their fp32 ulps.
        self.share_calls = True

    @property
    def layers(self) -> list[ConvLayer]:
        return [cast(ConvLayer, layer) for layer in self.conv_layers]

    def forward(self, waveforms: Sequence[Waveform]) -> Packed:
        """waveforms: B tensors (T_i,) -> Packed (sum of frames, C); a StreamWindow computes
        only the frames its stream's cache lacks."""
        split = [split_known(w, self.step, self.receptive) for w in waveforms]
        # Clips of equal length (streaming chunks, warm-up) share one conv call.
        by_length: dict[int, list[int]] = {}
        for i, (known, todo) in enumerate(split):
            if known is None or todo.shape[-1] >= self.receptive:
                key = todo.shape[-1] if self.share_calls else -1 - i  # -1 - i: a call alone
                by_length.setdefault(key, []).append(i)
        new: list[Tensor | None] = [None] * len(waveforms)
        for indices in by_length.values():
            x = torch.stack([split[i][1] for i in indices])[:, None]  # (b, 1, T)
            if x.device.type == "cpu" and x.shape[-1] >= self.receptive:
                x = in_pieces(self.layers, x)
            else:
                for layer in self.layers:
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
