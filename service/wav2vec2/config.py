"""Wav2Vec2Config: the fields of a Hugging Face config.json that change inference, for every
architecture of the family (family.py says which of them each architecture reads)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import ModelError
from service.wav2vec2 import family
from service.wav2vec2.activations import NAMES as ACTIVATIONS
from service.wav2vec2.family import TASKS, Family


@dataclass
class Wav2Vec2Config:
    """Defaults are those of transformers' Wav2Vec2Config; names are its JSON keys."""

    vocab_size: int | None = 32
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    conv_pos_kernel_size: int = 19  # Data2VecAudio: num_conv_pos_embeddings convs of this size
    conv_pos_batch_norm: bool = False  # HuBERT: BatchNorm1d before an un-normed positional conv
    feat_proj_layer_norm: bool = True  # HuBERT: False drops the feature projection's LayerNorm
    do_stable_layer_norm: bool = False
    num_buckets: int = 320  # WavLM: relative position buckets (wavlm.py)
    max_bucket_distance: int = 800  # WavLM: distance of the last log-spaced bucket
    position_embeddings_type: str | None = "relative"  # Conformer: "relative", "rotary" or None
    rotary_embedding_base: float = 10_000  # Conformer, rotary
    conv_depthwise_kernel_size: int = 31  # Conformer: convolution module
    # Only decide whether the checkpoint carries `masked_spec_embed` (unused at inference).
    mask_time_prob: float = 0.05
    mask_feature_prob: float = 0.0
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    tdnn_dim: tuple[int, ...] = (512, 512, 512, 512, 1500)
    tdnn_kernel: tuple[int, ...] = (5, 3, 3, 1, 1)
    tdnn_dilation: tuple[int, ...] = (1, 2, 3, 1, 1)
    xvector_output_dim: int = 512
    add_adapter: bool = False
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    num_adapter_layers: int = 3
    output_hidden_size: int | None = None
    adapter_attn_dim: int | None = None
    pad_token_id: int | None = 0
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    architectures: tuple[str, ...] = ("Wav2Vec2Model",)
    model_type: str = "wav2vec2"
    # Everything else config.json held, written back unchanged by to_dict().
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.output_hidden_size is None:
            self.output_hidden_size = self.hidden_size
        self.validate()

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def family(self) -> Family:
        found = family.FAMILIES.get(self.model_type)
        assert found is not None, "validate() refuses unknown model types"
        return found

    @property
    def architecture(self) -> str:
        return self.architectures[0] if self.architectures else self.family.architecture("Model")

    @property
    def head(self) -> str:
        """The head suffix of the architecture: "ForCTC", ..., "Model"."""
        parts = family.split_architecture(self.architecture)
        assert parts is not None, "validate() refuses unknown architectures"
        return parts[1]

    @property
    def task(self) -> str:
        return TASKS[self.head]

    @property
    def has_masked_spec_embed(self) -> bool:
        """Whether the checkpoint carries the (training-only) SpecAugment vector."""
        masking = self.mask_time_prob > 0 or self.mask_feature_prob > 0
        return masking or self.family.always_masked_spec_embed

    @property
    def head_hidden_size(self) -> int:
        """Width of what the encoder hands the head (the adapter may project it)."""
        return int(self.output_hidden_size if self.add_adapter else self.hidden_size)  # type: ignore[arg-type]

    @property
    def samples_per_frame(self) -> int:
        """Input samples per output frame: the frame step, adapter included."""
        step = 1
        for s in self.conv_stride:
            step *= s
        if self.add_adapter:
            step *= self.adapter_stride**self.num_adapter_layers
        return step

    def num_frames(self, num_samples: int) -> int:
        """Output frames for a clip of num_samples (the feature encoder's length arithmetic)."""
        n = num_samples
        for k, s in zip(self.conv_kernel, self.conv_stride):
            n = (n - k) // s + 1
        if self.add_adapter:
            for _ in range(self.num_adapter_layers):
                n = (n - 1) // self.adapter_stride + 1
        return n

    def min_samples(self) -> int:
        """Fewest input samples that give the head something to work on."""
        frames_needed = 1
        if self.head == "ForXVector":
            # TDNN shrinks the sequence; the std pooling needs at least two frames left.
            frames_needed = 2 + sum(
                d * (k - 1) for k, d in zip(self.tdnn_kernel, self.tdnn_dilation)
            )
        n = 1
        while self.num_frames(n) < frames_needed:
            n += 1
        return n

    def validate(self) -> None:
        def bad(name: str, why: str) -> ModelError:
            return ModelError(f"unsupported config.json: {name}={getattr(self, name)!r}: {why}")

        if self.model_type not in family.FAMILIES:
            raise bad("model_type", f"supported model types are {sorted(family.FAMILIES)}")
        if self.architecture == self.family.architecture(family.PRETRAINING):
            raise bad(
                "architectures",
                "a pre-training checkpoint has no serving head; fine-tune it "
                f"or load it as {self.family.architecture('Model')} for embeddings",
            )
        if self.architecture not in self.family.architectures:
            raise bad("architectures", f"supported are {self.family.architectures}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise bad("feat_extract_norm", "must be 'group' or 'layer'")
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                raise bad(name, f"supported activations are {sorted(ACTIVATIONS)}")
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise bad("conv_dim", "conv_dim, conv_kernel and conv_stride must have equal lengths")
        if not len(self.tdnn_dim) == len(self.tdnn_kernel) == len(self.tdnn_dilation):
            raise bad("tdnn_dim", "tdnn_dim, tdnn_kernel and tdnn_dilation must have equal lengths")
        if self.hidden_size % self.num_attention_heads:
            raise bad("num_attention_heads", "must divide hidden_size")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise bad("num_conv_pos_embedding_groups", "must divide hidden_size")
        if self.position_embeddings_type not in ("relative", "rotary", None):
            raise bad("position_embeddings_type", "must be 'relative', 'rotary' or null")
        if self.conv_depthwise_kernel_size % 2 == 0:
            raise bad("conv_depthwise_kernel_size", "must be odd (same-length padding)")
        if self.head == "ForCTC" and not self.vocab_size:
            raise bad("vocab_size", "a CTC head needs a vocabulary size")
        pooled_heads = ("ForSequenceClassification", "ForAudioFrameClassification")
        if self.add_adapter and self.head in pooled_heads:
            raise bad("add_adapter", f"{self.architecture} does not support adapters")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Wav2Vec2Config:
        """config.json's dict -> config, with the family's defaults and pinned switches."""
        architectures = raw.get("architectures") or [None]
        found = family.find(raw.get("model_type"), architectures[0])
        if found is not None:
            raw = {"model_type": found.model_type, **found.config_values(raw)}
            if not raw.get("architectures"):  # a bare backbone's config.json may name none
                raw["architectures"] = [found.architecture("Model")]
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in raw.items() if k in names}
        for key in (
            "conv_dim",
            "conv_stride",
            "conv_kernel",
            "tdnn_dim",
            "tdnn_kernel",
            "tdnn_dilation",
            "architectures",
        ):
            if key in known and known[key] is not None:
                known[key] = tuple(known[key])
        if known.get("architectures") is None:
            known.pop("architectures", None)
        if "id2label" in known:
            known["id2label"] = {int(k): str(v) for k, v in (known["id2label"] or {}).items()}
        elif "num_labels" in raw:
            known["id2label"] = {i: f"LABEL_{i}" for i in range(int(raw["num_labels"]))}
        extra = {k: v for k, v in raw.items() if k not in names}
        try:
            return cls(**known, extra=extra)
        except TypeError as exc:  # a field of the wrong type
            raise ModelError(f"unsupported config.json: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> Wav2Vec2Config:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = {v: k for k, v in self.id2label.items()}
        return out
