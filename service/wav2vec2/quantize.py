"""Dynamic int8 on CPU (`--dtype int8`): int8 weights, activations quantised per row at run time.

Each nn.Linear becomes an `Int8Linear`, and so do the front-end convolutions after the first,
rewritten as a linear layer over their strided windows (`WindowLinear`): at 512 channels they
are a third of a base model's FLOPs. The first conv (one input channel, kernel 10) and the
grouped positional conv stay fp32. The int8 GEMM is torch._int_mm (oneDNN: VNNI or AMX).

Why not a library: torch 2.13 deprecates torch.ao.quantization.quantize_dynamic (it warns and
points to torchao). torchao 0.18 (Int8DynamicActivationInt8WeightConfig, the same _int_mm
underneath) was timed beside this module (BENCHMARKS.md, "int8 on CPU"): per layer it was
slower (eager: ~10 passes to quantise activations, the weight's column sums on every call;
here 3 passes and the sums once), on the whole base model the two were within the shared
machine's noise; this needs no dependency and no torchao import (which logs warnings on a
CPU-only torch).

Applied after loading (the weights are assigned from meta tensors) and after fuse_qkv: the
fused q/k/v projection is quantised; the per-projection modules, kept as views for the
checkpoint keys, are dropped from the forward's modules so no fp32 copy stays alive.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from service.wav2vec2.heads import Head, TDNNLayer
from service.wav2vec2.model import Attention, ConvLayer

# Activations go in as uint8 (int8 + 128): VNNI multiplies unsigned by signed bytes, and
# oneDNN's signed-by-signed path on a CPU without AMX is slower (torchao does the same).
_SHIFT = 128


class Int8Linear(nn.Module):
    """y = x W^T + b with W int8 per output row and x quantised per row (symmetric) per call."""

    weight_t: Tensor
    weight_scale: Tensor
    shift: Tensor
    bias: Tensor | None

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # (O,)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (O, I)
        self.register_buffer("weight_t", q.t())  # (I, O), what _int_mm takes
        self.register_buffer("weight_scale", scale)
        # sum_k (x_k + 128) w_k = sum_k x_k w_k + 128 sum_k w_k: the shift's share, once.
        self.register_buffer("shift", q.sum(dim=1, dtype=torch.int32) * _SHIFT)  # (O,)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., I) float32 -> (..., O) float32."""
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)  # (M, I)
        scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(127)  # (M, 1)
        xq = torch.round(x / scale).add_(_SHIFT).to(torch.uint8)
        acc = torch._int_mm(xq, self.weight_t).sub_(self.shift)  # (M, O) int32
        y = acc.to(torch.float32).mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


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
        """x: (B, C, T) -> (B, C_out, T'), T' = (T - kernel) // stride + 1."""
        b, c, _ = x.shape
        windows = x.unfold(-1, self.kernel, self.stride)  # (B, C, T', k), a view
        t = windows.shape[2]
        cols = windows.permute(0, 2, 1, 3).reshape(b * t, c * self.kernel)  # (B T', C k)
        return self.linear(cols).view(b, t, -1).transpose(1, 2)  # (B, C_out, T')


def quantize_int8(model: Head) -> Head:
    """In place: int8 weights for every linear layer and the multi-channel front-end convs."""
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
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return model
