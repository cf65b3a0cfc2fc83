"""Self-attention over packed sequences: many clips in one (N, H, d) tensor, no padding.

Every clip attends to its own frames only, so a clip's output cannot depend on its batch.
Three kernels, chosen once per model:
- "eager": matmul + softmax per clip (the reference formula, any device);
- "sdpa": torch's scaled_dot_product_attention per clip on CPU; on CUDA, torch's packed
  variable-length kernel (FlashAttention) when present, else a padded batch with a key mask;
- "flash": flash-attn 2's flash_attn_varlen_func (optional package, CUDA, fp16/bf16).
A fourth, "padded" (one key-masked SDPA call over the padded batch, any device), is what
training runs under `use_kernel`: per-clip slices cost a zero-filled gradient per clip.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

# (q, k, v, cu_seqlens, max_len) -> out; q, k, v: (N, H, d) packed, cu_seqlens: (B + 1,) int32
AttentionFn = Callable[[Tensor, Tensor, Tensor, Tensor, int], Tensor]


def _per_clip(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> AttentionFn:
    """Runs fn on each clip's (1, H, T, d) slice; CPU kernels gain nothing from padding."""

    def run(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int) -> Tensor:
        bounds = cu.tolist()
        if len(bounds) == 2:  # one clip: no slicing, no copy back
            return fn(*(t.transpose(0, 1).unsqueeze(0) for t in (q, k, v)))[0].transpose(0, 1)
        out = torch.empty_like(q)
        for a, b in zip(bounds[:-1], bounds[1:]):
            qi, ki, vi = (t[a:b].transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, H, T, d)
            out[a:b] = fn(qi, ki, vi)[0].transpose(0, 1)
        return out

    return run


def biased_per_clip(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, bias: list[Tensor]) -> Tensor:
    """Attention with an additive score bias per clip, (H, T_i, T_i) each (WavLM's relative
    position bias): SDPA per clip with a float mask, any device. Packed (N, H, d) in and out."""
    out = torch.empty_like(q)
    for (a, b), clip_bias in zip(zip(cu.tolist()[:-1], cu.tolist()[1:]), bias):
        qi, ki, vi = (t[a:b].transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, H, T, d)
        mask = clip_bias.unsqueeze(0).to(q.dtype)
        out[a:b] = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask)[0].transpose(0, 1)
    return out


def _eager(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (1, H, T, T)
    return scores.softmax(dim=-1) @ v


def _sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def _padded_sdpa(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int) -> Tensor:
    """One padded SDPA call with a key mask: fewer launches on GPU than per-clip calls."""
    lengths = (cu[1:] - cu[:-1]).long()
    batch, heads, dim = lengths.numel(), q.shape[1], q.shape[2]
    frame = torch.arange(max_len, device=q.device)
    valid = frame[None, :] < lengths[:, None]  # (B, T)
    padded = [q.new_zeros(batch, max_len, heads, dim) for _ in range(3)]
    for dst, src in zip(padded, (q, k, v)):
        dst[valid] = src
    qp, kp, vp = (t.transpose(1, 2) for t in padded)  # (B, H, T, d)
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=valid[:, None, None, :])
    return out.transpose(1, 2)[valid]


def _torch_varlen() -> AttentionFn | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None

    def run(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int) -> Tensor:
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len)
        return out[0] if isinstance(out, tuple) else out

    return run


def _flash_attn() -> AttentionFn | None:
    try:
        from flash_attn import flash_attn_varlen_func  # type: ignore[import-not-found]
    except ImportError:
        return None

    def run(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int) -> Tensor:
        return flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len)

    return run


def _gpu_sdpa(dtype: torch.dtype) -> AttentionFn:
    varlen = _torch_varlen() if dtype in (torch.float16, torch.bfloat16) else None
    if varlen is None:
        return _padded_sdpa

    def run(q: Tensor, k: Tensor, v: Tensor, cu: Tensor, max_len: int) -> Tensor:
        try:
            return varlen(q, k, v, cu, max_len)
        except RuntimeError:  # an architecture or head size the varlen kernel lacks
            return _padded_sdpa(q, k, v, cu, max_len)

    return run


@functools.cache
def select(kind: str, device_type: str, dtype: torch.dtype) -> tuple[str, AttentionFn]:
    """Resolves auto/eager/sdpa/flash/padded to the kernel that will run, and names it."""
    if kind == "padded":
        return "padded", _padded_sdpa
    if kind in ("flash", "auto") and device_type == "cuda" and dtype != torch.float32:
        fn = _flash_attn()
        if fn is not None:
            return "flash", fn
        if kind == "flash":
            log.warning("flash-attn is not installed; using SDPA (FlashAttention backend)")
    if kind == "eager":
        return "eager", _per_clip(_eager)
    if device_type == "cuda":
        return "sdpa", _gpu_sdpa(dtype)
    return "sdpa", _per_clip(_sdpa)


@contextlib.contextmanager
def use_kernel(model: nn.Module, kind: str) -> Iterator[str]:
    """Runs model's attention with the `kind` kernel inside the block (any kind `select`
    takes); the kernels it had come back on exit. Yields the resolved kernel's name.

    model: a Wav2Vec2Model or a head holding one as `.backbone`.
    """
    backbone: Any = getattr(model, "backbone", model)
    layers = backbone.attentions()
    saved = backbone.attention_kind, [a.kernel for a in layers]
    try:
        yield backbone.set_attention(kind)
    finally:
        backbone.attention_kind = saved[0]
        for attention, kernel in zip(layers, saved[1]):
            attention.kernel = kernel
