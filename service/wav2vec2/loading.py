"""Checkpoint directory (or hub id) -> a ready, eval-mode model with its pre/post-processing."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor
from torch.nn.utils import parametrize

from service.errors import ModelError
from service.wav2vec2 import family
from service.wav2vec2.adapters import Languages, load_languages
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.conformer import ConvolutionModule
from service.wav2vec2.features import FeatureExtractor
from service.wav2vec2.heads import Head, Wav2Vec2ForCTC, build
from service.wav2vec2.onednn import use_onednn
from service.wav2vec2.quantize import available as int8_available
from service.wav2vec2.quantize import quantize_int8
from service.wav2vec2.resume import Resume
from service.wav2vec2.tokenizer import CTCTokenizer

log = logging.getLogger(__name__)

# Weights that fuse_qkv copies into one tensor at load (see _read_safetensors).
FUSED = re.compile(r"\.attention\.[qkv]_proj\.")
# *.arpa (with alphabet.json and language_model/*.json, *.txt): a ProcessorWithLM's decoder.
HUB_FILES = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.md", "*.arpa"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_VERIFY_THRESHOLD = 0.7  # cosine, for a checkpoint that names none
INT8 = "int8"  # float32 activations, int8 weights (quantize.py); CPU only


@dataclass
class LoadedModel:
    name: str
    source: str
    config: Wav2Vec2Config
    model: Head
    features: FeatureExtractor
    tokenizer: CTCTokenizer | None
    device: torch.device
    dtype: torch.dtype  # of the activations; float32 under int8
    languages: Languages | None = None  # an MMS checkpoint's adapters, chosen per clip
    int8: bool = False  # weights quantised to int8 (quantize.py)
    onednn: bool = False  # fp32 encoder GEMMs on oneDNN, not MKL (onednn.py)

    @property
    def dtype_name(self) -> str:
        """What --dtype gave: float32, float16, bfloat16 or int8."""
        return INT8 if self.int8 else str(self.dtype).removeprefix("torch.")

    @property
    def task(self) -> str:
        return self.config.task

    def verify_threshold(self) -> float:
        """Cosine threshold of /v1/verify: the checkpoint's `verify_threshold` (chosen where it
        was trained, e.g. demo-speakers' equal-error point), else DEFAULT_VERIFY_THRESHOLD."""
        value = self.config.extra.get("verify_threshold", DEFAULT_VERIFY_THRESHOLD)
        if not _is_number(value) or not -1 <= value <= 1:
            raise ModelError(
                f"{self.name}: config.json verify_threshold must be a number in [-1, 1]"
            )
        return float(value)

    def window_seconds(self) -> tuple[float, float] | None:
        """The long-audio windows the checkpoint asks for (config.json `chunk_seconds` and
        `stride_seconds`, e.g. a model trained on short utterances), or None."""
        extra = self.config.extra
        if "chunk_seconds" not in extra and "stride_seconds" not in extra:
            return None
        chunk, stride = extra.get("chunk_seconds"), extra.get("stride_seconds", 0)
        if not (_is_number(chunk) and _is_number(stride) and 0 <= 2 * stride < chunk):
            raise ModelError(
                f"{self.name}: config.json chunk_seconds and stride_seconds must be numbers "
                "with 0 <= 2 * stride_seconds < chunk_seconds"
            )
        return float(chunk), float(stride)

    @property
    def sampling_rate(self) -> int:
        return self.features.sampling_rate

    @property
    def frame_seconds(self) -> float:
        return self.config.samples_per_frame / self.features.sampling_rate

    @property
    def min_samples(self) -> int:
        return self.config.min_samples()

    @property
    def front_end_reusable(self) -> bool:
        """Whether a stream's windows can share front-end frames (resume.py): a local front
        end, no per-clip normalisation of the samples, no int8 (its front-end scales are per
        piece of the samples computed), no adapters."""
        return (
            self.model.backbone.feature_extractor.local
            and not self.features.do_normalize
            and not self.int8
            and self.languages is None
        )

    def forward(
        self,
        clips: list[np.ndarray],
        languages: Sequence[str | None] = (),
        resume: Sequence[Resume | None] = (),
    ) -> list[np.ndarray]:
        """The batch forward (Head.infer with this checkpoint's feature extractor): clips
        (T_i,) float32 -> one float32 numpy output per clip, independent of the batch; with
        language adapters, each clip in its language (None or none given: the default). A
        clip with a Resume (only where front_end_reusable) is a stream window."""
        if self.languages is not None:
            return self.languages.infer(clips, self.features, languages or [None] * len(clips))
        return self.model.infer(clips, self.features, resume)


def _is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number (a bool is not one, though Python says it is an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve(source: str) -> Path:
    """A local directory as is; anything else is a hub id fetched through huggingface_hub."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")):
        raise ModelError(f"model path {source!r} is not a checkpoint directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, allow_patterns=HUB_FILES))
    except Exception as exc:  # offline, unknown repo, gated repo: one clear message
        raise ModelError(
            f"cannot fetch {source!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Offline? Download it where there is network (`hf download "
            f"{source} --local-dir DIR`), copy DIR here and pass --model DIR."
        ) from exc


def read_weights(path: Path) -> dict[str, Tensor]:
    """model.safetensors, sharded safetensors, or pytorch_model.bin (weights_only)."""
    single = [path / "model.safetensors", path / "pytorch_model.bin"]
    indexes = [path / "model.safetensors.index.json", path / "pytorch_model.bin.index.json"]
    for f in single:
        if f.exists():
            return _read_file(f)
    for index in indexes:
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            weights: dict[str, Tensor] = {}
            for shard in shards:
                weights.update(_read_file(path / shard))
            return weights
    raise ModelError(f"{path} holds no weights (model.safetensors or pytorch_model.bin)")


def _read_file(f: Path) -> dict[str, Tensor]:
    try:
        if f.suffix == ".safetensors":
            return _read_safetensors(f)
        # weights_only: a .bin is a pickle; never let it construct arbitrary objects.
        return torch.load(str(f), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read weights {f}: {exc}") from exc


def _read_safetensors(f: Path) -> dict[str, Tensor]:
    """Memory-mapped, so a weight's pages are read (and counted in RSS) when first used; but
    the q/k/v projections are read with pread into their own memory: fuse_qkv copies them
    into one tensor, and mapped pages, once read, would stay resident beside that copy
    (288 MiB for a large model)."""
    weights = load_file(str(f))
    fused = [k for k in weights if FUSED.search(k)]
    try:
        with safe_open(str(f), framework="pt", backend="pread") as reader:  # type: ignore[call-arg]
            weights.update({k: reader.get_tensor(k) for k in fused})
    except TypeError:  # safetensors < 0.8 has no pread backend: mapped, as the rest
        pass
    return weights


def rename(
    weights: dict[str, Tensor], config: Wav2Vec2Config, pretraining: bool
) -> dict[str, Tensor]:
    """Checkpoint keys -> ours, by the family's rename table (ours are transformers' current
    names); a pre-training checkpoint loses its pre-training-only parts."""
    fam = config.family
    drop = fam.pretraining_only if pretraining and fam.pretraining_only else ()
    renames = fam.compiled_renames()
    prefix = fam.prefix + "."
    out = {}
    for key, value in weights.items():
        if drop and key.startswith(drop):
            continue
        for pattern, repl in renames:
            key = pattern.sub(repl, key)
        if fam.is_unused(key):
            continue
        if config.head == "Model" and not key.startswith(prefix):
            key = prefix + key  # a bare backbone checkpoint has no prefix
        out[key] = value
    return out


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The activations' dtype for --dtype; int8 computes in float32 around int8 GEMMs."""
    if dtype == INT8:
        if device.type != "cpu":
            raise ModelError("--dtype int8 runs on the CPU only (use float16 on a GPU)")
        if not int8_available():
            raise ModelError("--dtype int8 needs a torch built with oneDNN (x86 CPU wheels are)")
        return torch.float32
    if dtype == "auto":  # what the device runs fastest at the same accuracy (BENCHMARKS.md)
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if dtype == "bfloat16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("bfloat16 on a CPU without AMX or AVX512-BF16 is much slower than float32")
    return DTYPES[dtype]


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA, or DNNL_ as it was named) below its bf16 dot products.
_ONEDNN_CAPS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def cpu_has_native_bf16() -> bool:
    """bf16 dot products in hardware (AMX, or AVX512-BF16 as on Zen 4/5 and Cooper Lake) that
    torch's kernels may use: where bfloat16 runs faster than float32 (BENCHMARKS.md, bf16 on an
    AVX512-BF16 CPU). A process capped below them (ATEN_CPU_CAPABILITY=avx2, an oneDNN ISA cap)
    emulates bf16, several times slower than float32, so it does not count."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return False
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if os.environ.get(variable, "").upper() in _ONEDNN_CAPS_WITHOUT_BF16:
            return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private: may go away
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def load_model(
    source: str,
    *,
    name: str | None = None,
    task: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
    attention: str = "auto",
    languages: Sequence[str] = (),
    language_memory_mb: float | None = None,
    linear: str = "auto",
) -> LoadedModel:
    """`languages`: an MMS checkpoint's adapters to serve (default all it has), all resident
    or, with `language_memory_mb`, loaded on first use within that budget. `linear`: fp32 CPU
    GEMMs on oneDNN or MKL (auto: whichever this CPU runs clearly faster; onednn.py)."""
    path = resolve(source)
    raw, fam = _read_config(path)
    architecture = (raw.get("architectures") or [fam.architecture("Model")])[0]
    pretraining = architecture == fam.architecture(family.PRETRAINING)
    if pretraining:
        if task != "embed":
            raise ModelError(
                f"{source} is a {architecture} checkpoint: pre-training is not "
                "a serving task. Serve its encoder with --task embed, or fine-tune it."
            )
        raw = {**raw, "architectures": [fam.architecture("Model")]}
    config = Wav2Vec2Config.from_dict(raw)
    if task not in ("auto", config.task):
        raise ModelError(f"{source} is a {config.architecture} ({config.task}); it cannot {task}")
    with torch.device("meta"):  # no random init: the checkpoint's tensors become the params
        model = build(config)
    weights = rename(read_weights(path), config, pretraining)
    missing, unexpected = _compare(model.state_dict().keys(), weights.keys())
    if missing or unexpected:
        raise ModelError(
            f"{path}: weights do not match {config.architecture}: "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatch: config and weights disagree
        raise ModelError(f"{path}: {exc}") from exc
    del weights  # the parameters hold the tensors now; fuse_qkv can free the q/k/v ones
    _fold_weight_norms(model)
    for module in list(model.modules()):
        if isinstance(module, ConvolutionModule):
            module.fold_batch_norm()
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    model = model.to(device=dev, dtype=dt).eval().requires_grad_(False)
    for attention_module in model.backbone.attentions():
        attention_module.fuse_qkv()
    model.backbone.set_attention(attention)
    tokenizer = CTCTokenizer.from_dir(path) if config.task == "transcribe" else None
    served = None
    if isinstance(model, Wav2Vec2ForCTC):
        target = config.extra.get("target_lang")
        served = load_languages(path, model, target, languages, language_memory_mb)
    if served is not None:
        tokenizer = served.tokenizers[served.default]
    if dtype == INT8:
        if served is not None:  # adapters swap fp32 weights in per language
            raise ModelError(f"{source}: --dtype int8 does not take MMS language adapters yet")
        quantize_int8(model)
    on_onednn = dev.type == "cpu" and dtype != INT8 and dt == torch.float32
    on_onednn = on_onednn and use_onednn(model, linear)
    return LoadedModel(
        name=name or _default_name(source),
        source=source,
        config=config,
        model=model,
        features=FeatureExtractor.from_dir(path),
        tokenizer=tokenizer,
        device=dev,
        dtype=dt,
        languages=served,
        int8=dtype == INT8,
        onednn=on_onednn,
    )


def _fold_weight_norms(model: torch.nn.Module) -> None:
    """Folds weight norm (the positional conv's) into a plain weight once, not every forward,
    in fp32 at least: folded in a fp16 checkpoint's own dtype, g * v / ||v|| is off by ~1e-4
    relative, which the trained demo model turns into 1e-4 of its logits (transformers
    computes the norm on fp32 parameters)."""
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        originals = module.parametrizations.weight  # type: ignore[union-attr]
        for key in ("original0", "original1"):
            tensor = getattr(originals, key)
            if tensor.dtype in (torch.float16, torch.bfloat16):
                setattr(originals, key, torch.nn.Parameter(tensor.float(), requires_grad=False))
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def _read_config(path: Path) -> tuple[dict, family.Family]:
    """config.json, and the family it belongs to; an architecture we do not serve is refused
    here, before any weight is read."""
    f = path / "config.json"
    if not f.exists():
        raise ModelError(f"{path} has no config.json")
    try:
        raw = json.loads(f.read_text())
    except ValueError as exc:
        raise ModelError(f"cannot parse {f}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{f}: not a JSON object")
    architecture = (raw.get("architectures") or [None])[0]
    fam = family.find(raw.get("model_type"), architecture)
    if fam is None:
        raise ModelError(
            f"{f}: model_type={raw.get('model_type')!r}, architectures={raw.get('architectures')}:"
            f" unsupported architecture; supported are {family.supported_architectures()}"
        )
    pretraining = fam.architecture(family.PRETRAINING) if fam.pretraining_only else None
    if architecture is not None and architecture not in (*fam.architectures, pretraining):
        raise ModelError(
            f"{f}: architectures={raw.get('architectures')}: supported {fam.name} heads are "
            f"{fam.architectures}"
        )
    return raw, fam


def _compare(expected, given) -> tuple[list[str], list[str]]:
    expected, given = set(expected), set(given)
    return sorted(expected - given), sorted(given - expected)


def _default_name(source: str) -> str:
    return Path(source.rstrip("/")).name or source
