"""service/wav2vec2/wavlm.py: buckets as transformers, where the table lives, FlexAttention.
(Parity for every variant is test_wav2vec2's; batch invariance and text test_family's.)"""

from __future__ import annotations

import pytest
import torch

from service.wav2vec2.loading import load_model
from service.wav2vec2.wavlm import WavLMAttention, relative_buckets, use_flex
from tests.checkpoints import speech_like
from tests.test_wav2vec2 import ours, rel_err

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize(("num_buckets", "max_distance"), [(320, 800), (16, 40), (10, 7)])
def test_buckets_match_transformers(num_buckets, max_distance):
    reference_attention = transformers.models.wavlm.modeling_wavlm.WavLMAttention(
        32, 4, num_buckets=num_buckets, max_distance=max_distance
    )
    relative = torch.arange(-3000, 3001)
    want = reference_attention._relative_positions_bucket(relative)
    assert torch.equal(relative_buckets(relative, num_buckets, max_distance), want)


def test_layer_0_holds_the_table_and_every_layer_a_gate(checkpoints):
    backbone = load_model(str(checkpoints("wavlm-ctc"))).model.backbone
    attentions = [layer.attention for layer in backbone.encoder.layers]
    assert all(isinstance(a, WavLMAttention) for a in attentions)
    assert [hasattr(a, "rel_attn_embed") for a in attentions] == [True, False]


@pytest.mark.slow
def test_flex_attention_equals_per_clip_sdpa(checkpoints):
    """The FlexAttention path (same-clip block mask, bias as score modifier) on CPU: compiles
    for minutes, then gives the per-clip SDPA answer for a mixed batch."""
    loaded = load_model(str(checkpoints("wavlm-ctc-stable-bias")))
    clips = [speech_like(s, seed=i) for i, s in enumerate((1.7, 0.6, 2.4))]
    want = ours(loaded, clips)
    use_flex(loaded.model)
    try:
        got = ours(loaded, clips)
    finally:
        use_flex(loaded.model, on=False)
    for g, w in zip(got, want):
        assert rel_err(g, w) <= 1e-5
