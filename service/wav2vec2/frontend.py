"""The convolutional front end: raw samples -> feature frames -> the encoder's width.

Each clip's convs run on its own samples (group norm, where a checkpoint has it, sees that clip
only); clips of one length share a call. A stream window computes only the frames its stream
has not computed yet (resume.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import torch
from torch import Tensor, nn

from service.wav2vec2.activations import activation
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.packed import Packed
from service.wav2vec2.resume import Waveform, join_known, split_known

CONV_PIECE = 1024  # output frames per front-end conv call on CPU (conv_in_pieces)
FUSE_FROM = 16_000 * 2  # samples: shorter clips' first-layer outputs fit in cache anyway


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
        elif x.device.type == "cpu":  # (B, C, T); B clips of one length
            x = conv_in_pieces(self.conv, lambda a, b: x[..., a:b], x.shape[-1])
        else:  # the GPU path as before: pieces not measured there
            x = self.conv(x)
        return self.after_conv(x)

    def after_conv(self, x: Tensor) -> Tensor:
        """The norm and activation of this layer's conv output x: (B, C, T)."""
        if self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.norm == "group":
            x = self.layer_norm(x)
        return self.activation(x)


Source = Callable[[int, int], Tensor]  # a conv input's frames [a, b), made on demand: (B, C, b - a)


class PiecewiseConv(Protocol):
    """What a front-end conv that is not an nn.Conv1d offers (int8's WindowLinear)."""

    kernel: int
    stride: int

    def in_pieces(self, source: Source, spans: list[tuple[int, int]]) -> Tensor: ...


def conv_in_pieces(conv: nn.Module, source: Source, frames_in: int) -> Tensor:
    """A front-end conv (nn.Conv1d, or int8's WindowLinear) over the input source makes,
    CONV_PIECE output frames a call: the same sums, faster while a piece's input stays in cache
    (BENCHMARKS.md, second round), and an input made piece by piece never exists whole
    (first_two_in_pieces). -> (B, C_out, T')."""
    if isinstance(conv, nn.Conv1d):
        k, s = conv.kernel_size[0], conv.stride[0]
        return torch.cat(
            [conv(source(a * s, (b - 1) * s + k).contiguous()) for a, b in _spans(frames_in, k, s)],
            -1,
        )
    other = cast(PiecewiseConv, conv)
    return other.in_pieces(source, _spans(frames_in, other.kernel, other.stride))


def _spans(frames_in: int, kernel: int, stride: int) -> list[tuple[int, int]]:
    """A conv's output frames in pieces of at most CONV_PIECE: [(a, b), ...]."""
    frames = (frames_in - kernel) // stride + 1
    return [(a, min(a + CONV_PIECE, frames)) for a in range(0, frames, CONV_PIECE)]


def first_two_in_pieces(first: ConvLayer, second: ConvLayer, x: Tensor) -> Tensor:
    """The raw-audio conv, its norm and activation, and the second conv, CONV_PIECE output frames
    of the second at a time: the first layer's output (64 MB for a 10 s clip at 512 channels)
    never exists whole. Tensors over glibc's 32 MiB mmap ceiling are fresh mappings whose pages
    fault in on every call: on this project's CPU that made the first layer 4x slower than the
    same arithmetic in cache (BENCHMARKS.md, "Front end in pieces"). A group norm's per-channel
    statistics need the whole clip, so they are summed over pieces first (the first conv is a
    small share of the FLOPs); int8's second conv reads its input's range in a
    pass of its own (WindowLinear.in_pieces). Returns the second conv's output before its own
    norm and activation. x: (B, 1, T) float on the CPU."""
    c0 = first.conv
    k0, s0 = c0.kernel_size[0], c0.stride[0]
    frames0 = (x.shape[-1] - k0) // s0 + 1

    def conv0(a: int, b: int) -> Tensor:  # first-layer frames [a, b), before the norm
        # oneDNN's conv, not ConvLayer's GEMM: on pieces in cache it was 7-17% faster over the
        # front end here (Zen 5), while the GEMM wins on whole clips on the Xeon of the first
        # engine rows of BENCHMARKS.md.
        return c0(x[..., a * s0 : (b - 1) * s0 + k0])

    affine: tuple[Tensor, Tensor] | None = None  # a group norm's scale and shift, (B, C, 1)
    if first.norm == "group":
        # Sums of (y - shift) per piece in float32, shift = the first piece's channel means
        # (no cancellation in E[d^2] - E[d]^2), accumulated over pieces in float64: within
        # 3e-8 of float64 throughout, and 6x faster than converting each piece to float64.
        sums = torch.zeros(x.shape[0], c0.out_channels, dtype=torch.float64)
        squares = torch.zeros_like(sums)
        shift: Tensor | None = None
        for a in range(0, frames0, CONV_PIECE):
            y = conv0(a, min(a + CONV_PIECE, frames0)).float()
            if shift is None:
                shift = y.mean(-1, keepdim=True)
            d = y.sub_(shift)
            sums += d.sum(-1)
            squares += d.square().sum(-1)
        assert shift is not None
        offset = sums / frames0
        mean = shift[..., 0].double() + offset
        var = (squares / frames0 - offset.square()).clamp_min(0)
        norm = first.layer_norm
        assert isinstance(norm, nn.GroupNorm)
        rstd = (var + norm.eps).rsqrt()
        gamma, beta = norm.weight.double(), norm.bias.double()
        scale = rstd * gamma
        affine = (scale[..., None].to(x.dtype), (beta - mean * scale)[..., None].to(x.dtype))

    def first_out(a: int, b: int) -> Tensor:  # first-layer frames [a, b), activated
        y = conv0(a, b)
        if affine is None:  # layer norm or none: per frame, as the layer by layer path does
            return first.after_conv(y)
        return first.activation(torch.addcmul(affine[1], y, affine[0]))

    return conv_in_pieces(second.conv, first_out, frames0)


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

    @property
    def fuse_first_two(self) -> bool:
        """first_two_in_pieces applies: a raw-audio first conv (fp32 or bf16), then a conv."""
        layers = self.layers
        return (
            len(layers) > 1
            and type(layers[0].conv) is nn.Conv1d
            and layers[0].conv.in_channels == 1
        )

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
                by_length.setdefault(todo.shape[-1], []).append(i)
        new: list[Tensor | None] = [None] * len(waveforms)
        for indices in by_length.values():
            x = torch.stack([split[i][1] for i in indices])[:, None]  # (b, 1, T)
            layers = self.layers
            if self.fuse_first_two and x.device.type == "cpu" and x.shape[-1] >= FUSE_FROM:
                x = layers[1].after_conv(first_two_in_pieces(layers[0], layers[1], x))
                layers = layers[2:]
            for layer in layers:
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
