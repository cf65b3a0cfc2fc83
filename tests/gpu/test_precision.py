"""fp16 and bf16 on CUDA against fp32 on CUDA (and CUDA fp32 against CPU fp32), on tiny and
base-sized random checkpoints: logits close relative to their scale, argmax mostly the same.

Tolerances from the same comparison on CPU (tests/gpu/compare.py runs there too): fp16
rel_err <= 0.008 and argmax agreement >= 0.99, bf16 <= 0.05 and >= 0.97; the bounds leave
room for GPU kernels rounding differently. Random models have near ties, hence not 1.0.
"""

from __future__ import annotations

import pytest

from service.wav2vec2.loading import load_model
from tests.checkpoints import speech_like
from tests.gpu.compare import closeness

MODELS = ["ctc-group", "ctc-layer-stable-bias-bin", "ctc-add-adapter", "classify-weighted", "base"]
TOLERANCE = {"float16": (0.02, 0.95), "bfloat16": (0.08, 0.90)}


def clips():
    return [speech_like(s, seed=i) for i, s in enumerate([0.6, 1.7, 3.1, 7.9])]


@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
@pytest.mark.parametrize("name", MODELS)
def test_half_precision_stays_close_to_fp32(models, name, dtype):
    path = str(models(name))
    reference = load_model(path, device="cuda", dtype="float32").forward(clips())
    loaded = load_model(path, device="cuda", dtype=dtype)
    assert str(loaded.dtype) == f"torch.{dtype}"
    got = closeness(reference, loaded.forward(clips()))
    assert got.within(*TOLERANCE[dtype]), got


@pytest.mark.parametrize("name", MODELS)
def test_cuda_fp32_matches_cpu_fp32(models, name):
    """TF32 is cuDNN's default for convolutions, hence 1e-2 and not 1e-4."""
    path = str(models(name))
    cpu = load_model(path, device="cpu", dtype="float32").forward(clips())
    cuda = load_model(path, device="cuda", dtype="float32").forward(clips())
    got = closeness(cpu, cuda)
    assert got.within(1e-2, 0.99), got
