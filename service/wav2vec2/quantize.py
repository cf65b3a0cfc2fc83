"""Dynamic int8 on CPU (`--dtype int8`): int8 weights, activations quantised at run time.

Each nn.Linear becomes an `Int8Linear`, and so do the front-end convolutions after the first,
rewritten as a linear layer over their strided windows (`WindowLinear`): at 512 channels they
are a third of a base model's FLOPs. The first conv (one input channel, kernel 10) and the
grouped positional conv stay fp32.

The int8 GEMM is oneDNN's (`torch.ops.onednn.qlinear_pointwise`, the op torch.compile's x86
int8 path lowers to; VNNI or AMX): uint8 activations with one scale and zero point per call,
int8 weights per output channel, the dequantisation and bias fused into the GEMM, so the
output is float32 with no pass of its own. Scales never cross clips, so int8 answers are
batch-invariant: a front-end conv quantises each clip's piece (frontend.in_pieces) on its own
scale, before its windows are gathered (so the gathering copies bytes, not floats), and a
linear layer over a packed batch makes one call per clip (`ClipRows`): a clip's bytes, scales
and int32 sums are those it gets alone. Per-row scales were tried instead: they cost 17% on a
mixed batch (the rows' scales need a pass after the GEMM) and, with zero points in the middle
of the byte, saturated the int16 pairs of AVX2's u8 x s8 instructions (argmax agreement with
fp32 81% against 91%): BENCHMARKS.md.
Profiled on a base model, the first route (torch._int_mm to int32, then scaled and biased in
four elementwise passes, activations quantised per row in six) spent more time in those
passes than in its GEMMs; this one quantises in four (aminmax, scale and shift, clamp, cast).

Why not a library: torch 2.13 deprecates torch.ao.quantization.quantize_dynamic and every
quantized-tensor constructor (quantize_per_tensor*: they warn); torchao's
Int8DynamicActivationInt8WeightConfig runs on torch._int_mm with the same elementwise passes
(BENCHMARKS.md, "int8 on CPU"). The onednn ops take plain uint8/int8 tensors: no deprecated
type is involved, and nothing is imported beyond torch.

Applied after loading (the weights are assigned from meta tensors) and after fuse_qkv: the
fused q/k/v projection is quantised; the per-projection modules, kept as views for the
checkpoint keys, are dropped from the forward's modules so no fp32 copy stays alive.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

from service.wav2vec2.conformer import ConformerAttention
from service.wav2vec2.frontend import ConvLayer, FeatureEncoder
from service.wav2vec2.heads import Head, TDNNLayer
from service.wav2vec2.model import Adapter, Attention, Wav2Vec2Model
from service.wav2vec2.packed import Packed


def available() -> bool:
    return hasattr(torch.ops.onednn, "qlinear_pointwise") and torch.backends.mkldnn.is_available()


def quantize(x: Tensor, bounds: tuple[float, float] | None = None) -> tuple[Tensor, float, int]:
    """x float32 -> (uint8 of the same shape, scale, zero point): asymmetric, one scale for the
    whole tensor (what oneDNN's int8 GEMM takes), the range always including 0. `bounds`: a
    range known beforehand instead of x's own."""
    lo, hi = bounds or (float(v) for v in torch.aminmax(x))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255, 1e-12)
    zero = min(255, max(0, round(-lo / scale)))
    # + 0.5 then the cast's truncation: round half up, the values being >= 0 by then.
    q = x.mul(1 / scale).add_(zero + 0.5).clamp_(0, 255).to(torch.uint8)
    return q, scale, zero


class ClipRows:
    """The row layouts of the forward in progress, so that a linear layer can split its rows
    by clip without the model code passing lengths down: the clips' frames after the front
    end and after an adapter, one row per clip after the backbone (pooled heads). Forward
    hooks record them (quantize_int8); a layer takes the latest layout that covers its rows.
    Context-local: concurrent forwards of one model do not see each other's layouts."""

    current: ContextVar[list[list[int]] | None] = ContextVar("int8_clip_rows", default=None)

    @classmethod
    def of(cls, rows: int) -> list[int] | None:
        """Rows per clip for a tensor of `rows` rows, None outside a model or if none fits."""
        for lengths in reversed(cls.current.get() or []):
            if sum(lengths) == rows:
                return lengths
        return None

    @classmethod
    def install(cls, model: Head) -> None:
        def start(module: nn.Module, args: Any) -> None:
            cls.current.set([])

        def end(module: nn.Module, args: Any, out: Any) -> None:
            cls.current.set(None)

        def packed(module: nn.Module, args: Any, out: Packed) -> None:
            cls._add(out.lengths)

        def pooled(module: nn.Module, args: Any, out: tuple[Packed, Any]) -> None:
            cls._add([1] * len(out[0].lengths))

        model.register_forward_pre_hook(start)
        model.register_forward_hook(end)
        for m in model.modules():
            if isinstance(m, FeatureEncoder | Adapter):
                m.register_forward_hook(packed)
            elif isinstance(m, Wav2Vec2Model):
                m.register_forward_hook(pooled)

    @classmethod
    def _add(cls, lengths: list[int]) -> None:
        layouts = cls.current.get()
        if layouts is not None:
            layouts.append(list(lengths))


class Int8Linear(nn.Module):
    """y = x W^T + b with W int8 per output row, x quantised per call (`quantize`), on its
    own range or on `bounds` where the input's range is known (a sinusoid table)."""

    weight_scale: Tensor
    weight_zero: Tensor
    bias: Tensor | None

    def __init__(self, linear: nn.Linear, bounds: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bounds = bounds
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # (O,)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (O, I)
        self.packed = torch.ops.onednn.qlinear_prepack(q, None)  # oneDNN's blocked layout
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero", torch.zeros(len(scale), dtype=torch.int64))
        bias = None if linear.bias is None else linear.bias.detach().float().contiguous()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, ..., I) float32 -> (N, ..., O) float32: one activation scale and GEMM call
        per clip of a packed batch (ClipRows: N frames, or N clips), one for the whole tensor
        outside a batch or with fixed bounds."""
        lead = x.shape[:-1]
        clips = None if self.bounds or x.dim() < 2 else ClipRows.of(x.shape[0])
        if clips is None or len(clips) == 1:
            y = self.quantized(*quantize(x.reshape(-1, self.in_features), self.bounds))
        else:
            parts = [part.reshape(-1, self.in_features) for part in x.split(clips) if len(part)]
            y = torch.cat([self.quantized(*quantize(part)) for part in parts])
        return y.view(*lead, self.out_features)

    def quantized(self, xq: Tensor, scale: float, zero: int) -> Tensor:
        """xq: (M, I) uint8 with its scale and zero point -> (M, O) float32."""
        return torch.ops.onednn.qlinear_pointwise(
            xq.contiguous(),
            scale,
            zero,
            self.packed,
            self.weight_scale,
            self.weight_zero,
            self.bias,
            1.0,  # output scale and zero point: unused for a float32 output
            0,
            torch.float32,
            "none",
            [],
            "",
        )

    def extra_repr(self) -> str:
        bounds = "" if self.bounds is None else f", bounds={self.bounds}"
        return f"in_features={self.in_features}, out_features={self.out_features}, int8{bounds}"


class WindowLinear(nn.Module):
    """A front-end Conv1d (no padding, dilation or groups) as one linear layer over its
    strided windows: the same sums as the conv, in a form Int8Linear can take."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        out_dim, in_dim, k = conv.weight.shape
        self.in_channels, self.kernel, self.stride = in_dim, k, conv.stride[0]
        self.linear = nn.Linear(in_dim * k, out_dim, bias=conv.bias is not None)
        with torch.no_grad():
            self.linear.weight = nn.Parameter(conv.weight.reshape(out_dim, in_dim * k), False)
            if conv.bias is not None:
                self.linear.bias = nn.Parameter(conv.bias, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, T) -> (B, C_out, T'), T' = (T - kernel) // stride + 1. On the CPU, x is
        one piece of frontend.in_pieces: one activation scale per piece."""
        b, c, _ = x.shape
        linear = self.linear
        if isinstance(linear, Int8Linear):  # every window sees the same values: quantise once
            # (one clip: under int8 the front end runs each clip alone, share_calls)
            xq, scale, zero = quantize(x)  # then gather bytes, not floats
            y = linear.quantized(self.columns(xq), scale, zero)
        else:
            y = linear(self.columns(x))
        return y.view(b, -1, y.shape[-1]).transpose(1, 2)  # (B, C_out, T')

    def columns(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B T', C k): each output frame's window, flattened."""
        b, c, _ = x.shape
        windows = x.unfold(-1, self.kernel, self.stride)  # (B, C, T', k), a view
        return windows.permute(0, 2, 1, 3).reshape(b * windows.shape[2], c * self.kernel)


def quantize_int8(model: Head) -> Head:
    """In place: int8 weights for every linear layer and the multi-channel front-end convs;
    the front end computes each clip in its own calls, the linear layers split by clip."""
    ClipRows.install(model)
    for encoder in [m for m in model.modules() if isinstance(m, FeatureEncoder)]:
        encoder.share_calls = False
    for layer in [m for m in model.modules() if isinstance(m, ConvLayer)]:  # front end
        conv = layer.conv
        if isinstance(conv, nn.Conv1d) and conv.in_channels > 1 and conv.padding == (0,):
            layer.conv = WindowLinear(conv)  # type: ignore[assignment]
    for attention in [m for m in model.modules() if isinstance(m, Attention)]:
        if attention.qkv is not None:
            for name in ("q_proj", "k_proj", "v_proj"):  # views of qkv, kept for the keys
                delattr(attention, name)
    for parent in list(model.modules()):
        if isinstance(parent, TDNNLayer):  # reads its Linear's weight as a conv kernel
            continue
        for name, child in parent.named_children():
            if not isinstance(child, nn.Linear):
                continue
            # A relative Conformer's linear_pos projects the sinusoids of the batch's longest
            # clip, shared by every clip: their own range would make a clip's scale depend on
            # its batch; sinusoids always lie in [-1, 1].
            sinusoids = isinstance(parent, ConformerAttention) and name == "linear_pos"
            setattr(parent, name, Int8Linear(child, (-1.0, 1.0) if sinusoids else None))
    return model
