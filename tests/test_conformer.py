"""service/wav2vec2/conformer.py: position tables as transformers, BatchNorm folded at load.
(Parity for every variant is test_wav2vec2's; batch invariance, text and transformers' padded
batches test_family's.)"""

from __future__ import annotations

import pytest
import torch

from service.wav2vec2.conformer import ConvolutionModule, relative_sinusoids, rotary_table
from service.wav2vec2.loading import load_model

transformers = pytest.importorskip("transformers")
conformer_hf = pytest.importorskip(
    "transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer"
)


def test_position_tables_match_transformers():
    config = transformers.Wav2Vec2ConformerConfig(hidden_size=32, num_attention_heads=4)
    hidden = torch.zeros(1, 37, 32)
    want = conformer_hf.Wav2Vec2ConformerRelPositionalEmbedding(config)(hidden)[0]
    assert torch.equal(relative_sinusoids(37, 32, torch.device("cpu")), want)
    config.rotary_embedding_base = 500
    cos_sin = conformer_hf.Wav2Vec2ConformerRotaryPositionalEmbedding(config)(hidden)
    cos, sin = rotary_table(37, 8, 500, torch.device("cpu"))
    assert torch.equal(cos, cos_sin[0, :, 0, 0]) and torch.equal(sin, cos_sin[1, :, 0, 0])


def test_batch_norm_is_folded_into_the_depthwise_conv(checkpoints):
    model = load_model(str(checkpoints("conformer-ctc-relative"))).model
    modules = [m for m in model.modules() if isinstance(m, ConvolutionModule)]
    assert modules and all(m.batch_norm is None for m in modules)
    assert all(m.depthwise_conv.bias is not None for m in modules)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
