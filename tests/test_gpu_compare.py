"""tests/gpu/compare.py, the GPU tests' yardstick, checked on CPU: identical runs are 0 apart,
and fp16/bf16 runs on CPU land inside the bounds the GPU tests use."""

from __future__ import annotations

import numpy as np
import pytest

from service.wav2vec2.loading import load_model
from tests.checkpoints import speech_like
from tests.gpu.compare import closeness
from tests.gpu.test_precision import MODELS, TOLERANCE


def test_closeness_measures_error_and_argmax_agreement():
    ref = [np.array([[1.0, 0.0], [0.0, 2.0]], np.float32), np.array([0.0, 4.0], np.float32)]
    assert closeness(ref, ref).rel_err == 0 and closeness(ref, ref).agreement == 1
    got = [np.array([[1.0, 0.0], [3.0, 2.0]], np.float32), np.array([0.0, 3.0], np.float32)]
    c = closeness(ref, got)
    assert c.rel_err == pytest.approx(1.5)  # |3 - 0| / 2
    assert c.agreement == pytest.approx(2 / 3)  # 2 of 3 argmaxes (2 frames + 1 pooled)
    assert not c.within(0.5, 0.5) and c.within(2.0, 0.6)


@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
@pytest.mark.parametrize("name", [m for m in MODELS if m != "base"])
def test_half_precision_on_cpu_is_inside_the_gpu_bounds(checkpoints, name, dtype):
    path = str(checkpoints(name))
    clips = [speech_like(s, seed=i) for i, s in enumerate([0.6, 1.7, 3.1])]
    reference = load_model(path, dtype="float32").forward(clips)
    got = closeness(reference, load_model(path, dtype=dtype).forward(clips))
    assert got.within(*TOLERANCE[dtype]), got
