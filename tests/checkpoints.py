"""Tiny random Hugging Face checkpoints, written with save_pretrained (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from service.wav2vec2.family import split_architecture

VOCAB = {
    "<pad>": 0,
    "<s>": 1,
    "</s>": 2,
    "<unk>": 3,
    "|": 4,
    "E": 5,
    "T": 6,
    "A": 7,
    "O": 8,
    "N": 9,
    "I": 10,
    "H": 11,
    "S": 12,
    "R": 13,
    "L": 14,
    "'": 15,
}
LABELS = ["yes", "no", "up", "down"]

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    classifier_proj_size=24,
    tdnn_dim=(24, 24, 40),
    tdnn_kernel=(5, 3, 1),
    tdnn_dilation=(1, 2, 1),
    xvector_output_dim=20,
)

# name -> (architecture, config overrides, save options). The architecture picks the
# transformers config class: "HubertForCTC" -> HubertConfig (family.py's class prefix).
VARIANTS = {
    "ctc-group": ("Wav2Vec2ForCTC", {}, {}),
    "ctc-layer-stable-bias-bin": (
        "Wav2Vec2ForCTC",
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
        {"bin": True},
    ),
    "ctc-layer-postln-sharded": (
        "Wav2Vec2ForCTC",
        dict(feat_extract_norm="layer"),
        {"shard": True},
    ),
    "ctc-attn-adapter": (
        "Wav2Vec2ForCTC",
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, adapter_attn_dim=8),
        {},
    ),
    "ctc-add-adapter": (
        "Wav2Vec2ForCTC",
        dict(add_adapter=True, output_hidden_size=16, num_adapter_layers=2),
        {},
    ),
    "ctc-old-weightnorm": (
        "Wav2Vec2ForCTC",
        dict(hidden_act="gelu_new"),
        {"old_weight_norm": True},
    ),
    "ctc-relu-nomask": (
        "Wav2Vec2ForCTC",
        dict(hidden_act="relu", feat_extract_activation="relu", mask_time_prob=0.0),
        {},
    ),
    "classify-weighted": (
        "Wav2Vec2ForSequenceClassification",
        dict(use_weighted_layer_sum=True),
        {},
    ),
    "classify-stable": (
        "Wav2Vec2ForSequenceClassification",
        dict(feat_extract_norm="layer", do_stable_layer_norm=True),
        {},
    ),
    "frames-weighted": (
        "Wav2Vec2ForAudioFrameClassification",
        dict(use_weighted_layer_sum=True, feat_extract_norm="layer", do_stable_layer_norm=True),
        {},
    ),
    "xvector": ("Wav2Vec2ForXVector", dict(use_weighted_layer_sum=True), {}),
    "xvector-stable": (
        "Wav2Vec2ForXVector",
        dict(feat_extract_norm="layer", do_stable_layer_norm=True),
        {},
    ),
    "base": ("Wav2Vec2Model", {}, {}),
}
# Every other architecture of the family: each head transformers has for it and each switch
# its config class reads (STABLE = the large checkpoints' layer norms).
STABLE = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
DATA2VEC = dict(num_conv_pos_embeddings=3, conv_pos_kernel_size=5)  # 3 convs, not TINY's 16
VARIANTS |= {
    "hubert-ctc": ("HubertForCTC", {}, {}),
    "hubert-ctc-stable-bias-noprojnorm": (
        "HubertForCTC",
        dict(**STABLE, conv_bias=True, feat_proj_layer_norm=False),
        {},
    ),
    "hubert-ctc-batchnorm-oddkernel": (
        "HubertForCTC",
        dict(conv_pos_batch_norm=True, num_conv_pos_embeddings=15, feat_extract_norm="layer"),
        {},
    ),
    "hubert-ctc-attn-adapter": ("HubertForCTC", dict(**STABLE, adapter_attn_dim=8), {}),
    "hubert-classify-weighted-batchnorm": (
        "HubertForSequenceClassification",
        dict(use_weighted_layer_sum=True, conv_pos_batch_norm=True),
        {},
    ),
    "hubert-classify-stable": ("HubertForSequenceClassification", STABLE, {}),
    "hubert-base-old-weightnorm": ("HubertModel", {}, {"old_weight_norm": True}),
    "data2vec-ctc": ("Data2VecAudioForCTC", DATA2VEC, {}),
    "data2vec-ctc-bias-evenkernel": (
        "Data2VecAudioForCTC",
        dict(DATA2VEC, conv_bias=True, conv_pos_kernel_size=4),
        {},
    ),
    "data2vec-ctc-add-adapter": (
        "Data2VecAudioForCTC",
        dict(DATA2VEC, add_adapter=True, output_hidden_size=16, num_adapter_layers=2),
        {},
    ),
    "data2vec-classify-weighted": (
        "Data2VecAudioForSequenceClassification",
        dict(DATA2VEC, use_weighted_layer_sum=True),
        {},
    ),
    "data2vec-frames-weighted": (
        "Data2VecAudioForAudioFrameClassification",
        dict(DATA2VEC, use_weighted_layer_sum=True),
        {},
    ),
    "data2vec-xvector": ("Data2VecAudioForXVector", DATA2VEC, {}),
    "data2vec-base": ("Data2VecAudioModel", DATA2VEC, {}),
    "unispeech-ctc": ("UniSpeechForCTC", {}, {}),
    "unispeech-ctc-stable-bias-adapter": (
        "UniSpeechForCTC",
        dict(**STABLE, conv_bias=True, adapter_attn_dim=8),
        {},
    ),
    "unispeech-classify-weighted": (
        "UniSpeechForSequenceClassification",
        dict(use_weighted_layer_sum=True),
        {},
    ),
    "unispeech-base": ("UniSpeechModel", STABLE, {}),
    "unispeech-sat-ctc-stable-bias": ("UniSpeechSatForCTC", dict(**STABLE, conv_bias=True), {}),
    "unispeech-sat-ctc-attn-adapter": (
        "UniSpeechSatForCTC",
        dict(**STABLE, adapter_attn_dim=8, mask_time_prob=0.0),
        {},
    ),
    "unispeech-sat-classify": ("UniSpeechSatForSequenceClassification", {}, {}),
    "unispeech-sat-frames-weighted": (
        "UniSpeechSatForAudioFrameClassification",
        dict(**STABLE, use_weighted_layer_sum=True),
        {},
    ),
    "unispeech-sat-xvector": ("UniSpeechSatForXVector", dict(use_weighted_layer_sum=True), {}),
    "unispeech-sat-xvector-stable": ("UniSpeechSatForXVector", STABLE, {}),
    "unispeech-sat-base": ("UniSpeechSatModel", {}, {}),
}
# WavLM: 16 buckets up to distance 40 put most of a tiny clip's ~60 frames in log buckets.
BUCKETS = dict(num_buckets=16, max_bucket_distance=40)
VARIANTS |= {
    "wavlm-ctc": ("WavLMForCTC", BUCKETS, {}),
    "wavlm-ctc-stable-bias": ("WavLMForCTC", dict(**STABLE, **BUCKETS, conv_bias=True), {}),
    "wavlm-ctc-add-adapter": (
        "WavLMForCTC",
        dict(BUCKETS, add_adapter=True, output_hidden_size=16, num_adapter_layers=2),
        {},
    ),
    "wavlm-classify-weighted": (
        "WavLMForSequenceClassification",
        dict(BUCKETS, use_weighted_layer_sum=True),
        {},
    ),
    "wavlm-frames-stable-weighted": (
        "WavLMForAudioFrameClassification",
        dict(**STABLE, **BUCKETS, use_weighted_layer_sum=True),
        {},
    ),
    "wavlm-xvector-weighted": ("WavLMForXVector", dict(BUCKETS, use_weighted_layer_sum=True), {}),
    "wavlm-xvector-stable": ("WavLMForXVector", dict(**STABLE, **BUCKETS), {}),
    "wavlm-base": ("WavLMModel", {}, {}),  # the default 320 buckets: all exact at this length
    "conformer-ctc-relative": ("Wav2Vec2ConformerForCTC", dict(conv_depthwise_kernel_size=7), {}),
    "conformer-ctc-rotary-layer-bias": (
        "Wav2Vec2ConformerForCTC",
        dict(position_embeddings_type="rotary", feat_extract_norm="layer", conv_bias=True),
        {},
    ),
    "conformer-ctc-nopositions": (
        "Wav2Vec2ConformerForCTC",
        dict(position_embeddings_type=None),
        {},
    ),
    "conformer-ctc-add-adapter": (
        "Wav2Vec2ConformerForCTC",
        dict(add_adapter=True, output_hidden_size=16, num_adapter_layers=2),
        {},
    ),
    "conformer-classify-weighted-rotary": (
        "Wav2Vec2ConformerForSequenceClassification",
        dict(use_weighted_layer_sum=True, position_embeddings_type="rotary"),
        {},
    ),
    "conformer-frames-weighted": (
        "Wav2Vec2ConformerForAudioFrameClassification",
        dict(use_weighted_layer_sum=True, conv_depthwise_kernel_size=5),
        {},
    ),
    "conformer-xvector-weighted": (
        "Wav2Vec2ConformerForXVector",
        dict(use_weighted_layer_sum=True),
        {},
    ),
    "conformer-base-rotary": (
        "Wav2Vec2ConformerModel",
        dict(position_embeddings_type="rotary"),
        {},
    ),
}


def make_checkpoint(root: Path, variant: str, seed: int = 0) -> Path:
    """Writes a tiny random checkpoint of `variant` under root/variant and returns the path."""
    import transformers

    architecture, overrides, options = VARIANTS[variant]
    torch.manual_seed(seed)
    parts = split_architecture(architecture)
    assert parts is not None, architecture
    config = getattr(transformers, parts[0] + "Config")(
        **{**TINY, **overrides},
        vocab_size=len(VOCAB),
        architectures=[architecture],
        id2label=dict(enumerate(LABELS)),
        label2id={v: i for i, v in enumerate(LABELS)},
    )
    model = getattr(transformers, architecture)(config).eval()
    _randomize_norms(model)
    if architecture.startswith(("WavLM", "Wav2Vec2Conformer")):
        _sharpen_positions(model)
    path = root / variant
    kwargs = {}
    if options.get("shard"):
        kwargs["max_shard_size"] = "20KB"
    model.save_pretrained(path, safe_serialization=not options.get("bin"), **kwargs)
    if options.get("bin"):
        _force_bin(model, path)
    if options.get("old_weight_norm"):
        _to_old_weight_norm(path)
    (path / "vocab.json").write_text(json.dumps(VOCAB))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Wav2Vec2CTCTokenizer",
                "word_delimiter_token": "|",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "do_lower_case": False,
            }
        )
    )
    write_preprocessor(path, getattr(config, "feat_extract_norm", "layer") == "layer")
    return path


def write_preprocessor(path: Path, attention_mask: bool) -> None:
    """preprocessor_config.json as transformers' Wav2Vec2FeatureExtractor saves it."""
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                "feature_size": 1,
                "sampling_rate": 16000,
                "padding_value": 0.0,
                "do_normalize": True,
                "return_attention_mask": attention_mask,
            }
        )
    )


def _randomize_norms(model: torch.nn.Module) -> None:
    """Norms start at (1, 0): random values catch a norm applied in the wrong place."""
    with torch.no_grad():
        for module in model.modules():
            norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm1d)
            if isinstance(module, norms) and module.weight is not None:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
            if isinstance(module, torch.nn.BatchNorm1d):  # eval uses the running statistics
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        if hasattr(model, "layer_weights"):
            model.layer_weights.uniform_(-1, 1)


def _sharpen_positions(model: torch.nn.Module) -> None:
    """At init scale (std 0.02) attention is nearly uniform and a tiny model's output moves
    by < 1e-4 without its position bias or rotary: larger query/key and position weights make
    every position term count, so parity fails where one is missing."""
    scales = {
        "q_proj.weight": 0.3,
        "k_proj.weight": 0.3,
        "linear_q.weight": 0.3,
        "linear_k.weight": 0.3,
        "rel_attn_embed.weight": 1.0,
        "gru_rel_pos_linear.weight": 0.5,
        "pos_bias_u": 1.0,
        "pos_bias_v": 1.0,
        "linear_pos.weight": 0.3,
    }
    with torch.no_grad():
        for name, param in model.named_parameters():
            for suffix, std in scales.items():
                if name.endswith(suffix):
                    param.normal_(0.0, std)
            if name.endswith("gru_rel_pos_const"):
                param.uniform_(0.5, 1.5)


def _force_bin(model: torch.nn.Module, path: Path) -> None:
    if not (path / "pytorch_model.bin").exists():  # newer transformers always write safetensors
        torch.save(model.state_dict(), path / "pytorch_model.bin")
        (path / "model.safetensors").unlink(missing_ok=True)


def _to_old_weight_norm(path: Path) -> None:
    """Rewrites the positional conv's keys as weight_g / weight_v (checkpoints before torch 2.1)."""
    f = path / "model.safetensors"
    weights = load_file(f)
    renamed = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in weights.items()
    }
    save_file(renamed, f, metadata={"format": "pt"})


def speech_like(seconds: float, seed: int = 0, rate: int = 16_000) -> np.ndarray:
    """Noise shaped by a slow envelope: cheap, deterministic, not silence."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    envelope = 0.1 + 0.9 * np.abs(np.sin(np.linspace(0, seconds * 3, n) + seed))
    return (rng.standard_normal(n) * 0.1 * envelope).astype(np.float32)
