"""The demo model's shape, its committed weights read for training, and growing it deeper."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.heads import Wav2Vec2ForCTC
from service.wav2vec2.loading import read_weights, rename
from training.text import VOCAB


def model_config(first_conv: int = 64) -> Wav2Vec2Config:
    """3.9 M parameters: a pre-LN 4 x 256 transformer on a layer-norm conv front end."""
    return Wav2Vec2Config(
        vocab_size=len(VOCAB),
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        hidden_act="gelu",
        feat_extract_norm="layer",
        feat_extract_activation="gelu",
        conv_dim=(first_conv, 64, 128, 128, 256, 256, 256),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=True,
        num_conv_pos_embeddings=64,
        num_conv_pos_embedding_groups=16,
        do_stable_layer_norm=True,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
        pad_token_id=0,
        architectures=("Wav2Vec2ForCTC",),
        id2label={0: "LABEL_0", 1: "LABEL_1"},
        extra={
            "bos_token_id": 1,
            "eos_token_id": 2,
            "ctc_loss_reduction": "mean",
            "ctc_zero_infinity": True,
            "hidden_dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
            "feat_proj_dropout": 0.0,
            "final_dropout": 0.0,
            "layerdrop": 0.0,
        },
    )


def load_weights(model: Wav2Vec2ForCTC, model_dir: Path) -> None:
    """The committed (fp16) weights into a training model, in fp32, weight norm kept."""
    assign_weights(model, read_weights(model_dir))


def assign_weights(model: Wav2Vec2ForCTC, stored: dict[str, torch.Tensor]) -> None:
    """Weights under their checkpoint names (as stored) into a training model, in fp32."""
    weights = rename(stored, model.config, pretraining=False)
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)


@torch.no_grad()
def check_grown(before: Wav2Vec2ForCTC, after: Wav2Vec2ForCTC) -> None:
    clips = [torch.randn(16_000), torch.randn(24_000)]
    a, b = before.eval()(clips).data, after.eval()(clips).data
    diff = float((a - b).abs().max())
    assert diff < 1e-4 * float(a.abs().max()), diff
    print(
        f"grown to {after.config.num_hidden_layers} layers: same outputs (max |diff| {diff:.1e})",
        flush=True,
    )


def grow(model: Wav2Vec2ForCTC, layers: int) -> Wav2Vec2ForCTC:
    """The same function with `layers` transformer layers: new ones start as the identity.

    A pre-LN layer adds attention(LN(x)) and FFN(LN(x)) to x, so with its two output
    projections at zero it passes x through unchanged. New layers go between the trained ones
    (old layer i at position i * layers // old), randomly initialised but for those zeros: the
    round starts from exactly the committed model's outputs, with more depth to learn into.
    """
    config = model.config
    old = config.num_hidden_layers
    if layers <= old:
        return model
    if not config.do_stable_layer_norm:
        raise SystemExit("--layers: only a pre-LN (do_stable_layer_norm) encoder grows exactly")
    grown = Wav2Vec2ForCTC(dataclasses.replace(config, num_hidden_layers=layers))
    state = grown.state_dict()
    position = {i: i * layers // old for i in range(old)}  # old layer -> its new index
    prefix = "wav2vec2.encoder.layers."
    for key, value in model.state_dict().items():
        if key.startswith(prefix):
            i, rest = key[len(prefix) :].split(".", 1)
            key = f"{prefix}{position[int(i)]}.{rest}"
        state[key] = value
    for n in set(range(layers)) - set(position.values()):
        for name in ("attention.out_proj", "feed_forward.output_dense"):
            state[f"{prefix}{n}.{name}.weight"].zero_()
            state[f"{prefix}{n}.{name}.bias"].zero_()
    grown.load_state_dict(state, strict=True)
    return grown
