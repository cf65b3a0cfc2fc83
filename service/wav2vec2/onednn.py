"""fp32 linear layers on oneDNN's GEMM instead of MKL's, where this CPU runs it faster.

torch's nn.Linear on CPU calls MKL's sgemm. On AMD CPUs MKL takes a slower code path: on the
Zen 5 this project measures on (AVX-512), a (499 x 768) @ (768 x 3072) product ran at 31-34
GFLOP/s through MKL and 49-52 through oneDNN (the library torch already uses for its convs) or
ONNX Runtime's MLAS; that gap was most of why ONNX Runtime's fp32 export beat our fp32
(BENCHMARKS.md, "Second round: fp32 and int8 GEMMs on oneDNN"). Which library wins is the
CPU's business, so `auto` times both on the model's own largest layer at load (256 rows, 6
calls each: milliseconds for demo-ctc, some 0.1-0.5 s for a large model by its FLOPs, not
measured) and keeps MKL unless oneDNN is clearly faster.

The weights are reordered once into oneDNN's blocked layout (`_reorder_linear_weight`, what
torch.compile's CPU backend does) and the fp32 originals are dropped, so memory stays the same.
Results differ from MKL's in the last bits only (different summation order); every row is
still computed the same way whatever the batch (batch invariance holds).
"""

from __future__ import annotations

import logging
import time

import torch
from torch import Tensor, nn

from service.wav2vec2.frontend import FeatureProjection
from service.wav2vec2.model import Attention, FeedForward

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onednn", "mkl")
_CLEARLY_FASTER = 0.9  # oneDNN's median time must be under 90% of MKL's


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class OneDNNLinear(nn.Module):
    """y = x W^T + b through oneDNN with W prepacked; x: (..., in) float32 on the CPU."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float().contiguous()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.bias = None if linear.bias is None else linear.bias.detach().float().contiguous()

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN"


def _targets(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """The encoder's GEMMs (nearly all of a forward's FLOPs outside the conv front end): fused
    q/k/v, attention output, feed-forward, feature projection. Heads and MMS adapters stay
    nn.Linear (adapters swap their weights per language)."""
    found: list[tuple[nn.Module, str, nn.Linear]] = []
    for module in model.modules():
        if isinstance(module, Attention):
            fused = module.qkv is not None
            names = ["out_proj", *(["qkv"] if fused else ["q_proj", "k_proj", "v_proj"])]
        elif isinstance(module, FeedForward):
            names = ["intermediate_dense", "output_dense"]
        elif isinstance(module, FeatureProjection):
            names = ["projection"]
        else:
            continue
        for name in names:
            child = getattr(module, name)
            if type(child) is nn.Linear:
                found.append((module, name, child))
    return found


def _faster_on_onednn(linear: nn.Linear, rows: int = 256, repeats: int = 5) -> bool:
    """Times MKL (F.linear) and oneDNN on this layer, interleaved: is oneDNN clearly faster?"""
    candidate = OneDNNLinear(linear)
    x = torch.randn(rows, linear.in_features)
    times: dict[str, list[float]] = {"mkl": [], "onednn": []}
    sides = {"mkl": linear, "onednn": candidate}
    with torch.inference_mode():
        for f in sides.values():
            f(x)  # warm-up: oneDNN builds its primitive on first use
        for _ in range(repeats):
            for name, f in sides.items():
                start = time.perf_counter()
                f(x)
                times[name].append(time.perf_counter() - start)
    mkl, onednn = (sorted(times[k])[repeats // 2] for k in ("mkl", "onednn"))
    log.info("fp32 linear: MKL %.2f ms, oneDNN %.2f ms per call", 1e3 * mkl, 1e3 * onednn)
    return onednn < _CLEARLY_FASTER * mkl


def use_onednn(model: nn.Module, backend: str = "auto") -> bool:
    """In place, for an fp32 model on the CPU: the encoder's linear layers on oneDNN when
    `backend` is onednn, or auto and oneDNN is measured clearly faster. Returns whether."""
    if backend not in BACKENDS:
        raise ValueError(f"linear backend {backend!r}: one of {BACKENDS}")
    targets = _targets(model)
    if backend == "mkl" or not targets or not available():
        return False
    if backend == "auto":
        largest = max((t[2] for t in targets), key=lambda m: m.weight.numel())
        if not _faster_on_onednn(largest):
            return False
    for module in model.modules():
        if isinstance(module, Attention) and module.qkv is not None:
            for name in ("q_proj", "k_proj", "v_proj"):  # views of qkv, kept for the keys
                delattr(module, name)
    for parent, name, linear in targets:
        setattr(parent, name, OneDNNLinear(linear))
    return True
