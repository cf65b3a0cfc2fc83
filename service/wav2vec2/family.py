"""The Wav2Vec2 family: how each architecture differs from Wav2Vec2, one declarative entry each.

Every architecture here is Wav2Vec2's model with a few switches: its backbone sits under
another key prefix, its config class has other defaults, and a handful of modules differ
(HuBERT's feature-projection norm and batch-normed positional conv, Data2VecAudio's stack of
positional convs, WavLM's attention bias, the Conformer's layers). model.py reads the switches;
loading.py reads the prefix and the rename table. Adding an architecture is adding an entry.

An architecture name in config.json is the family's class prefix plus a head suffix:
"UniSpeechSatForXVector" = "UniSpeechSat" + "ForXVector".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# Head suffix -> the task it serves (the heads are shared by every family, see heads.py).
TASKS = {
    "ForCTC": "transcribe",
    "ForSequenceClassification": "classify",
    "ForXVector": "embed",
    "ForAudioFrameClassification": "frames",
    "Model": "embed",
}
PRETRAINING = "ForPreTraining"
ALL_HEADS = tuple(TASKS)

# Checkpoints written before torch 2.1 spell the weight-normed positional conv weight_g/_v.
WEIGHT_NORM_RENAMES = (
    (r"\.weight_g$", ".parametrizations.weight.original0"),
    (r"\.weight_v$", ".parametrizations.weight.original1"),
)
# Pre-training parts that an encoder served for embeddings does not use.
WAV2VEC2_PRETRAINING_ONLY = ("quantizer.", "project_hid.", "project_q.")

# Switches that only some config classes read; a family that does not read one behaves as
# these values say, whatever config.json holds (transformers ignores the key there too).
NEUTRAL: Mapping[str, Any] = MappingProxyType(
    {
        "feat_proj_layer_norm": True,  # HuBERT may drop the feature projection's LayerNorm
        "conv_pos_batch_norm": False,  # HuBERT may batch-norm before the positional conv
        "add_adapter": False,  # Wav2Vec2, Data2VecAudio, Conformer, WavLM: the strided adapter
        "adapter_attn_dim": None,  # Wav2Vec2, HuBERT, UniSpeech(Sat): MMS per-layer adapters
    }
)


@dataclass(frozen=True)
class Family:
    """What one architecture changes in the shared model. Fields left at their default are
    Wav2Vec2's behaviour."""

    name: str  # class-name prefix in `architectures`: "Hubert" for HubertForCTC
    model_type: str  # config.json `model_type`
    prefix: str  # attribute (and key prefix) of the backbone under a head: "hubert"
    heads: tuple[str, ...] = ALL_HEADS  # the head suffixes transformers has for it
    # Its config class's defaults where they differ from Wav2Vec2Config's: save_pretrained
    # writes only the values that differ from the class's own defaults.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Which of NEUTRAL's switches its config class reads; the others keep NEUTRAL's values.
    reads: frozenset[str] = frozenset()
    # Fields its modeling file hard-codes whatever config.json says.
    pinned: Mapping[str, Any] = field(default_factory=dict)
    # Which positional module model.py builds: "conv" (one weight-normed conv, or batch norm
    # then a plain conv), "conv_stack" (Data2VecAudio's convs with weightless LayerNorm) or
    # "none" (the Conformer: its positions are in its attention).
    positional: str = "conv"
    # Which encoder layer heads.ENCODER_LAYERS builds: "transformer", "wavlm", "conformer".
    # A layer may set Frames.position_bias for the layers after it: the hook for WavLM.
    encoder_layer: str = "transformer"
    # Its Model carries masked_spec_embed (training-only) even when masking is off.
    always_masked_spec_embed: bool = False
    # Key prefixes of a <name>ForPreTraining checkpoint to drop; None: no pre-training class.
    pretraining_only: tuple[str, ...] | None = WAV2VEC2_PRETRAINING_ONLY
    renames: tuple[tuple[str, str], ...] = WEIGHT_NORM_RENAMES
    # Key patterns (searched after renaming) its checkpoints hold but its forward never reads.
    unused: tuple[str, ...] = ()

    def architecture(self, head: str) -> str:
        return self.name + head

    @property
    def architectures(self) -> list[str]:
        return [self.architecture(h) for h in self.heads]

    def config_values(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """config.json's values as this family's transformers class reads them."""
        values = {**self.defaults, **raw}
        values.update({k: v for k, v in NEUTRAL.items() if k not in self.reads})
        values.update(self.pinned)
        return values

    def compiled_renames(self) -> list[tuple[re.Pattern[str], str]]:
        return [(re.compile(pattern), repl) for pattern, repl in self.renames]

    def is_unused(self, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in self.unused)


FAMILIES = {
    f.model_type: f
    for f in (
        Family(
            "Wav2Vec2",
            "wav2vec2",
            "wav2vec2",
            reads=frozenset({"add_adapter", "adapter_attn_dim"}),
        ),
        Family(
            "Hubert",
            "hubert",
            "hubert",
            heads=("ForCTC", "ForSequenceClassification", "Model"),
            reads=frozenset({"feat_proj_layer_norm", "conv_pos_batch_norm", "adapter_attn_dim"}),
            pretraining_only=None,
        ),
        Family(
            "Data2VecAudio",
            "data2vec-audio",
            "data2vec_audio",
            defaults={"num_conv_pos_embeddings": 5},
            reads=frozenset({"add_adapter"}),
            # Every feature-encoder conv has a LayerNorm; the encoder is post-LN only.
            pinned={"feat_extract_norm": "layer", "do_stable_layer_norm": False},
            positional="conv_stack",
            pretraining_only=None,
        ),
        Family(
            "UniSpeech",
            "unispeech",
            "unispeech",
            heads=("ForCTC", "ForSequenceClassification", "Model"),
            reads=frozenset({"adapter_attn_dim"}),
            pretraining_only=WAV2VEC2_PRETRAINING_ONLY + ("ctc_proj.",),
        ),
        Family(
            "UniSpeechSat",
            "unispeech-sat",
            "unispeech_sat",
            reads=frozenset({"adapter_attn_dim"}),
            always_masked_spec_embed=True,
            pretraining_only=WAV2VEC2_PRETRAINING_ONLY
            + ("speaker_proj.", "label_embeddings_concat", "layer_norm_for_extract."),
        ),
        Family(
            "WavLM",
            "wavlm",
            "wavlm",
            reads=frozenset({"add_adapter"}),
            encoder_layer="wavlm",
            pretraining_only=None,
        ),
        Family(
            "Wav2Vec2Conformer",
            "wav2vec2-conformer",
            "wav2vec2_conformer",
            defaults={"vocab_size": None},
            reads=frozenset({"add_adapter"}),
            # Its encoder is pre-LN in effect: no norm before the layers, one after them.
            pinned={"do_stable_layer_norm": True},
            positional="none",
            encoder_layer="conformer",
            renames=(
                (r"\.self_attn\.linear_([qkv])\.", r".self_attn.\1_proj."),
                (r"\.self_attn\.linear_out\.", ".self_attn.out_proj."),
            ),
            # transformers builds a positional conv it never calls, and saves rotary's
            # inv_freq, which conformer.py computes from the config.
            unused=(r"encoder\.pos_conv_embed\.", r"encoder\.embed_positions\."),
        ),
    )
}


def split_architecture(architecture: str) -> tuple[str, str] | None:
    """ "HubertForCTC" -> ("Hubert", "ForCTC"); None when no head suffix matches."""
    for head in (*ALL_HEADS, PRETRAINING):
        if architecture.endswith(head) and len(architecture) > len(head):
            return architecture[: -len(head)], head
    return None


def supported_architectures() -> list[str]:
    return sorted(a for f in FAMILIES.values() for a in f.architectures)


def find(model_type: str | None, architecture: str | None) -> Family | None:
    """The family config.json names by `model_type`, else by its architecture's class prefix."""
    if model_type is not None:
        return FAMILIES.get(model_type)
    if architecture is None:  # a config.json naming neither: Wav2Vec2's (transformers' default)
        return FAMILIES["wav2vec2"]
    parts = split_architecture(architecture)
    by_name = {f.name: f for f in FAMILIES.values()}
    return by_name.get(parts[0]) if parts else None
