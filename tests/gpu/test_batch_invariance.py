"""Batch invariance on CUDA: a clip alone and inside batches of 1..16 clips of other lengths
gives the same output, as tests/test_wav2vec2.py checks on CPU. cuBLAS may pick another GEMM
tiling for another number of packed frames, and cuDNN another algorithm for another batch of
the padded positional conv, so the bound is about one ulp of the dtype at the output's scale
(fp16 2^-10, bf16 2^-7, carried through the layers) rather than bitwise."""

from __future__ import annotations

import numpy as np
import pytest

from service.wav2vec2.loading import load_model
from tests.checkpoints import speech_like

TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 4e-2}
VARIANTS = [
    "ctc-group",
    "ctc-layer-stable-bias-bin",
    "classify-weighted",
    "xvector",
    "ctc-add-adapter",
    "base",
]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_equals_alone_on_cuda(models, variant, dtype):
    loaded = load_model(str(models(variant)), device="cuda", dtype=dtype)
    rng = np.random.default_rng(0)
    target = speech_like(3.7, seed=42)
    (alone,) = loaded.forward([target])
    for size in (2, 5, 16):
        lengths = rng.uniform(0.1, 30.0 if size == 2 else 8.0, size - 1)
        lengths = np.maximum(lengths, loaded.min_samples / 16_000 + 0.01)
        others = [speech_like(s, seed=i) for i, s in enumerate(lengths)]
        position = int(rng.integers(0, size))
        batch = others[:position] + [target] + others[position:]
        got = loaded.forward(batch)[position]
        assert got.shape == alone.shape
        assert rel_err(got, alone) <= TOLERANCE[dtype], (size, rel_err(got, alone))
