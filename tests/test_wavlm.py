"""service/wav2vec2/wavlm.py: buckets and bias as transformers, batch invariance, text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.wav2vec2.loading import load_model
from service.wav2vec2.wavlm import WavLMAttention, relative_buckets, use_flex
from tests.checkpoints import speech_like
from tests.test_wav2vec2 import ours, reference, rel_err

transformers = pytest.importorskip("transformers")

WAVLM_VARIANTS = [
    "wavlm-ctc",
    "wavlm-ctc-stable-bias",
    "wavlm-classify-weighted",
    "wavlm-xvector-weighted",
]


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


@pytest.mark.parametrize("variant", WAVLM_VARIANTS)
def test_batch_invariance(checkpoints, variant):
    """The bias of a clip is cut from the batch's longest clip's table: a clip alone and among
    longer and shorter ones gives the same output."""
    loaded = load_model(str(checkpoints(variant)))
    target = speech_like(1.7, seed=42)
    (alone,) = ours(loaded, [target])
    batch = [speech_like(s, seed=i) for i, s in enumerate((3.1, 0.6, 1.0))]
    for position in (0, 2):
        got = ours(loaded, batch[:position] + [target] + batch[position:])[position]
        assert rel_err(got, alone) <= 1e-4


def test_ctc_text_and_labels_match_transformers(checkpoints):
    ctc = load_model(str(checkpoints("wavlm-ctc-stable-bias")))
    classify = load_model(str(checkpoints("wavlm-classify-weighted")))
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(
        checkpoints("wavlm-ctc-stable-bias")
    )
    for seed in range(3):
        audio = speech_like(2.0, seed=seed)
        ids = reference(checkpoints("wavlm-ctc-stable-bias"), "WavLMForCTC", audio).argmax(-1)
        (logits,) = ours(ctc, [audio])
        assert ctc.tokenizer.decode(logits.argmax(-1).tolist()).text == tokenizer.decode(ids)
        want = reference(
            checkpoints("wavlm-classify-weighted"), "WavLMForSequenceClassification", audio
        )
        (got,) = ours(classify, [audio])
        assert int(np.argmax(got.numpy())) == int(want.argmax())


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
