"""The CUDA attention kernels of service/wav2vec2/attention.py against each other and fp32:
torch's packed variable-length kernel, the padded key-masked SDPA call, per-clip SDPA; and
the FLASH_ATTENTION backend forced with torch.nn.attention.sdpa_kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from service.wav2vec2 import attention
from service.wav2vec2.loading import load_model
from tests.checkpoints import speech_like

DTYPES = [torch.float16, torch.bfloat16]
TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 3e-2}  # a few ulps of an O(1) output
LENGTHS = [37, 250, 1, 128, 64]


def packed(dtype: torch.dtype, heads: int = 12, dim: int = 64, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    n = sum(LENGTHS)
    q, k, v = (torch.randn(n, heads, dim, generator=g, device="cuda") for _ in range(3))
    cu = torch.tensor(np.cumsum([0, *LENGTHS]), dtype=torch.int32, device="cuda")
    return q.to(dtype), k.to(dtype), v.to(dtype), cu, max(LENGTHS)


def varlen_or_skip() -> attention.AttentionFn:
    fn = attention._torch_varlen()
    if fn is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    return fn


@pytest.mark.parametrize("dtype", DTYPES)
def test_varlen_padded_and_per_clip_agree_with_fp32(dtype):
    q, k, v, cu, max_len = packed(dtype)
    per_clip = attention._per_clip(attention._sdpa)
    reference = per_clip(q.float(), k.float(), v.float(), cu, max_len)
    kernels = {
        "varlen": varlen_or_skip(),
        "padded": attention._padded_sdpa,
        "per_clip": per_clip,
    }
    outputs = {}
    for name, fn in kernels.items():
        out = fn(q, k, v, cu, max_len)
        assert out.shape == q.shape and out.dtype == dtype, name
        tol = TOLERANCE[dtype]
        torch.testing.assert_close(out.float(), reference, atol=tol, rtol=tol, msg=name)
        outputs[name] = out.float()
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(outputs["varlen"], outputs["padded"], atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sdpa_on_cuda_runs_the_varlen_kernel_on_the_models_layout(dtype):
    """q, k, v as the model makes them (strided views of one fused projection): the chosen
    kernel is the varlen one, with no silent fallback to the padded call."""
    varlen = varlen_or_skip()
    name, fn = attention.select("sdpa", "cuda", dtype)
    assert name == "sdpa"
    q, k, v, cu, max_len = packed(dtype)
    fused = torch.stack([q, k, v], dim=1)  # (N, 3, H, d), as Attention.forward views it
    views = fused.unbind(1)
    expected = varlen(q.contiguous(), k.contiguous(), v.contiguous(), cu, max_len)
    assert torch.equal(fn(*views, cu, max_len), expected)


def test_fp32_on_cuda_takes_the_padded_kernel():
    """The varlen kernel is FlashAttention, half precision only."""
    assert attention.select("sdpa", "cuda", torch.float32) == ("sdpa", attention._padded_sdpa)


@pytest.mark.parametrize("dtype", DTYPES)
def test_forced_flash_backend(dtype):
    """With FLASH_ATTENTION forced: per-clip SDPA runs on it and agrees with the default
    dispatch (to rounding: the default may pick cuDNN attention on some GPUs); the key-masked
    padded call cannot run on it, which is why half precision on CUDA uses the varlen kernel."""
    q, k, v, cu, max_len = packed(dtype)
    per_clip = attention._per_clip(attention._sdpa)
    default = per_clip(q, k, v, cu, max_len)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        forced = per_clip(q, k, v, cu, max_len)
        with pytest.raises(RuntimeError):
            attention._padded_sdpa(q, k, v, cu, max_len)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(forced, default, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", ["ctc-layer-stable-bias-bin", "base"])
def test_model_forward_under_forced_flash_is_unchanged(models, name):
    """The whole fp16 model runs with only FLASH_ATTENTION allowed (so no attention call in
    it falls back to a masked or math kernel) and gives bit for bit the same output."""
    varlen_or_skip()
    loaded = load_model(str(models(name)), device="cuda", dtype="float16", attention="sdpa")
    assert loaded.model.wav2vec2.attention_kind == "sdpa"
    clips = [speech_like(s, seed=i) for i, s in enumerate([0.4, 2.3, 5.0])]
    free = loaded.forward(clips)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        forced = loaded.forward(clips)
    for a, b in zip(free, forced):
        np.testing.assert_array_equal(a, b)
