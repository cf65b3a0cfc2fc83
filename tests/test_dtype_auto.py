"""`--dtype auto`: float16 on CUDA, bfloat16 on a CPU with native bf16 dot products (AVX512-BF16
or AMX), float32 on other CPUs; int8 only on request.

conftest.py pins the rest of the suite to float32; these tests undo that pin.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from service.build import build_model
from service.settings import Settings
from service.wav2vec2 import loading

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "service" / "models" / "demo-ctc"
DETECTOR = loading.cpu_has_native_bf16  # before conftest's fixture replaces it in each test


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_the_detector_agrees_with_the_cpu_flags(monkeypatch):
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(variable, raising=False)
    flags = cpu_flags()
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert DETECTOR() == (native and torch.backends.cpu.get_cpu_capability() == "AVX512")


@pytest.mark.parametrize(
    "capability, variable, cap",
    [
        ("AVX2", None, None),  # ATEN_CPU_CAPABILITY=avx2, or a torch without AVX-512 kernels
        ("AVX512", "ONEDNN_MAX_CPU_ISA", "AVX2"),
        ("AVX512", "DNNL_MAX_CPU_ISA", "avx512_core_vnni"),
    ],
)
def test_a_process_capped_below_bf16_is_not_native(monkeypatch, capability, variable, cap):
    """Emulated bf16 is several times slower than float32: auto must not pick it there."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    if variable:
        monkeypatch.setenv(variable, cap)
    assert DETECTOR() is False
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv(variable or "ONEDNN_MAX_CPU_ISA", raising=False)
    assert DETECTOR() is True  # the same CPU uncapped


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_a_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native)
    assert loading.pick_dtype("auto", torch.device("cpu")) == expected
    assert loading.pick_dtype("float32", torch.device("cpu")) == torch.float32  # asked for
    assert loading.pick_dtype("int8", torch.device("cpu")) == torch.float32  # fp32 around int8


def test_auto_on_cuda_is_float16():
    assert loading.pick_dtype("auto", torch.device("cuda")) == torch.float16


def test_the_default_server_on_a_bf16_cpu_serves_bf16_with_the_same_transcripts(monkeypatch):
    """What a fresh install does on such a CPU: demo-ctc in bf16, the examples transcribed as
    in float32 (its held-out CER in bf16 is in the model card)."""
    monkeypatch.delenv("W2V_DTYPE", raising=False)
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    auto = build_model(Settings(device="cpu"), "demo-ctc", str(DEMO), warmup=False)
    assert auto.card().dtype == "bfloat16"
    fp32 = build_model(Settings(device="cpu", dtype="float32"), "demo-ctc", str(DEMO), warmup=False)
    for name in ("hello_world", "weather", "quick_brown_fox"):
        x, rate = sf.read(ROOT / "examples" / f"{name}.wav", dtype="float32")
        a = auto._engine.predict(np.asarray(x), len(x) / rate)
        b = fp32._engine.predict(np.asarray(x), len(x) / rate)
        assert a.text == b.text and a.text


@pytest.mark.parametrize(
    "variant",
    [
        "ctc-group",
        "ctc-attn-adapter",
        "xvector-stable",
        "hubert-ctc-batchnorm-oddkernel",
        "data2vec-frames-weighted",
        "unispeech-sat-xvector",
        "wavlm-ctc-stable-bias",
        "conformer-ctc-relative",
        "conformer-classify-weighted-rotary",
    ],
)
def test_every_family_runs_in_bf16_on_the_cpu(checkpoints, variant):
    """What auto gives on such a CPU, for each architecture and head: close to float32."""
    from tests.checkpoints import speech_like

    clips = [speech_like(1.3, seed=1), speech_like(0.7, seed=2)]
    path = str(checkpoints(variant))
    full = loading.load_model(path, device="cpu", dtype="float32").forward(clips)
    half = loading.load_model(path, device="cpu", dtype="bfloat16").forward(clips)
    for a, b in zip(full, half):
        assert a.shape == b.shape and np.isfinite(b).all()
        assert float(np.abs(a - b).max() / np.abs(a).max()) < 0.05


def test_mms_languages_run_in_bf16(tmp_path):
    """MMS adapters are cast to the model's dtype when loaded (also on first use)."""
    from tests.checkpoints import speech_like
    from tests.mms_checkpoints import make_mms_checkpoint

    path = str(make_mms_checkpoint(tmp_path))
    clip = [speech_like(1.0)]
    for lang in ("eng", "deu"):
        full = loading.load_model(path, device="cpu", dtype="float32").forward(clip, [lang])
        half = loading.load_model(
            path, device="cpu", dtype="bfloat16", language_memory_mb=0.001
        ).forward(clip, [lang])
        assert full[0].shape == half[0].shape
        # 6.7% measured on these random weights: every layer's adapter rounds to bf16 too
        assert float(np.abs(full[0] - half[0]).max() / np.abs(full[0]).max()) < 0.1
