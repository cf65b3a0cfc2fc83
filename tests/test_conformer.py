"""service/wav2vec2/conformer.py: positions as transformers, folded BatchNorm, batch invariance
(also where transformers' own padded batch is not), text."""

from __future__ import annotations

import pytest
import torch

from service.wav2vec2.conformer import ConvolutionModule, relative_sinusoids, rotary_table
from service.wav2vec2.loading import load_model
from tests.checkpoints import speech_like
from tests.test_wav2vec2 import ours, reference, rel_err

transformers = pytest.importorskip("transformers")
conformer_hf = pytest.importorskip(
    "transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer"
)

CONFORMER_VARIANTS = [
    "conformer-ctc-relative",
    "conformer-ctc-rotary-layer-bias",
    "conformer-ctc-nopositions",
    "conformer-frames-weighted",
    "conformer-xvector-weighted",
]


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


@pytest.mark.parametrize("variant", CONFORMER_VARIANTS)
def test_batch_invariance(checkpoints, variant):
    loaded = load_model(str(checkpoints(variant)))
    target = speech_like(1.7, seed=42)
    (alone,) = ours(loaded, [target])
    batch = [speech_like(s, seed=i) for i, s in enumerate((3.1, 0.6, 1.0))]
    for position in (0, 2):
        got = ours(loaded, batch[:position] + [target] + batch[position:])[position]
        assert rel_err(got, alone) <= 1e-4


def test_transformers_padded_batch_lets_the_depthwise_conv_see_padding(checkpoints):
    """Why parity is checked one clip at a time (docs/api.md): transformers' padded batch
    changes a short clip's last frames; ours equals the clip alone."""
    path = checkpoints("conformer-ctc-relative")
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(path)
    model = transformers.Wav2Vec2ConformerForCTC.from_pretrained(path).eval()
    short, long = speech_like(1.0, seed=3), speech_like(2.0, seed=4)
    batch = fe(
        [short, long],
        sampling_rate=16_000,
        padding=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        padded = model(batch.input_values, attention_mask=batch.attention_mask).logits[0]
    alone = reference(path, "Wav2Vec2ConformerForCTC", short)
    assert rel_err(padded[: alone.shape[0]], alone) > 1e-3
    (got,) = ours(load_model(str(path)), [short])
    assert rel_err(got, alone) <= 1e-4


def test_ctc_text_matches_transformers(checkpoints):
    path = checkpoints("conformer-ctc-rotary-layer-bias")
    loaded = load_model(str(path))
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(path)
    for seed in range(3):
        audio = speech_like(2.0, seed=seed)
        ids = reference(path, "Wav2Vec2ConformerForCTC", audio).argmax(-1)
        (logits,) = ours(loaded, [audio])
        assert loaded.tokenizer.decode(logits.argmax(-1).tolist()).text == tokenizer.decode(ids)
