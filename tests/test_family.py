"""service/wav2vec2/family.py: the registry against transformers, and what each architecture
of the family adds (parity for every variant is test_wav2vec2's, which covers all VARIANTS)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from service.errors import ModelError
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.family import FAMILIES, NEUTRAL, PRETRAINING, TASKS, find, split_architecture
from service.wav2vec2.loading import load_model
from tests.checkpoints import TINY, VARIANTS, speech_like
from tests.test_wav2vec2 import ours, reference, rel_err

transformers = pytest.importorskip("transformers")

FAMILY_VARIANTS = sorted(
    v
    for v, (arch, _, _) in VARIANTS.items()
    if split_architecture(arch)[0] != "Wav2Vec2"  # type: ignore[index]
)


@pytest.mark.parametrize("fam", list(FAMILIES.values()), ids=list(FAMILIES))
def test_heads_are_those_transformers_has(fam):
    """Each family serves exactly the heads transformers defines for it."""
    have = tuple(h for h in TASKS if hasattr(transformers, fam.architecture(h)))
    assert fam.heads == have
    assert hasattr(transformers, fam.architecture(PRETRAINING)) == (
        fam.pretraining_only is not None
    )
    config_class = getattr(transformers, fam.name + "Config")
    assert config_class.model_type == fam.model_type


@pytest.mark.parametrize("fam", list(FAMILIES.values()), ids=list(FAMILIES))
def test_config_defaults_are_the_config_class_defaults(fam):
    """An empty config.json (save_pretrained writes only non-defaults) means what it means
    to transformers: every field we read has the family config class's default."""
    ours = Wav2Vec2Config.from_dict({"model_type": fam.model_type})
    theirs = getattr(transformers, fam.name + "Config")()
    for f in dataclasses.fields(Wav2Vec2Config):
        if f.name in ("extra", "id2label", "architectures", "output_hidden_size"):
            continue
        mine = getattr(ours, f.name)
        if not hasattr(theirs, f.name):  # a switch the class lacks: neutral or pinned
            assert mine == {**NEUTRAL, **fam.pinned}.get(f.name, mine), f.name
            continue
        want = getattr(theirs, f.name)
        want = tuple(want) if isinstance(want, list) else want
        assert mine == want, f.name


def test_architecture_names_split_into_family_and_head():
    assert split_architecture("UniSpeechSatForXVector") == ("UniSpeechSat", "ForXVector")
    assert split_architecture("Data2VecAudioModel") == ("Data2VecAudio", "Model")
    assert split_architecture("HubertForPreTraining") == ("Hubert", "ForPreTraining")
    assert split_architecture("Model") is None and split_architecture("WhisperEncoder") is None
    assert find("hubert", "Wav2Vec2ForCTC") is FAMILIES["hubert"]  # model_type decides
    assert find(None, "UniSpeechSatForCTC") is FAMILIES["unispeech-sat"]
    assert find(None, None) is FAMILIES["wav2vec2"]
    assert find("whisper", None) is None and find(None, "WhisperForConditionalGeneration") is None


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            {"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"]},
            "unsupported architecture",
        ),
        ({"model_type": "hubert", "architectures": ["HubertForXVector"]}, "supported Hubert heads"),
        ({"architectures": ["SEWForCTC"]}, "unsupported architecture"),
        ({"model_type": "data2vec-audio", "architectures": ["HubertForCTC"]}, "Data2VecAudio"),
    ],
)
def test_unknown_architectures_are_refused_by_name(tmp_path, raw, match):
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=match):
        load_model(str(tmp_path))


@pytest.mark.parametrize("variant", FAMILY_VARIANTS)
def test_batch_invariance(checkpoints, variant):
    """A clip alone equals the same clip inside a batch of clips of other lengths."""
    loaded = load_model(str(checkpoints(variant)))
    target = speech_like(2.7, seed=42)
    (alone,) = ours(loaded, [target])
    lengths = [0.4, 6.0, 1.1, 3.3]
    lengths = [max(s, loaded.min_samples / 16_000 + 0.01) for s in lengths]
    others = [speech_like(s, seed=i) for i, s in enumerate(lengths)]
    for position in (0, 4):
        batch = others[:position] + [target] + others[position:]
        got = ours(loaded, batch)
        assert rel_err(got[position], alone) <= 1e-4
    for clip, out in zip(others, got[:4]):  # the others too, each against itself alone
        (clip_alone,) = ours(loaded, [clip])
        assert rel_err(out, clip_alone) <= 1e-4


@pytest.mark.parametrize(
    "variant",
    [
        "hubert-ctc",
        "hubert-ctc-batchnorm-oddkernel",
        "data2vec-ctc",
        "unispeech-ctc",
        "unispeech-sat-ctc-stable-bias",
        "wavlm-ctc-stable-bias",
        "conformer-ctc-rotary-layer-bias",
        "conformer-ctc-relative",
    ],
)
def test_labels_and_text_equal_transformers(checkpoints, variant):
    """Identical argmax ids (so identical CTC text) as transformers, clip by clip."""
    path = checkpoints(variant)
    loaded = load_model(str(path))
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(path)
    architecture = VARIANTS[variant][0]
    clips = [speech_like(s, seed=i) for i, s in enumerate((0.7, 2.0, 3.1))]
    got = ours(loaded, clips)  # one batch
    for clip, logits in zip(clips, got):
        want = reference(path, architecture, clip).argmax(-1)
        assert torch.equal(logits.argmax(-1), want)
        assert loaded.tokenizer.decode(want.tolist()).text == tokenizer.decode(want.tolist())


def padded_reference(path, architecture: str, clips: list[np.ndarray]) -> list[torch.Tensor]:
    """transformers' logits for clips in one padded batch with an attention mask."""
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(path, return_attention_mask=True)
    model = getattr(transformers, architecture).from_pretrained(path).eval()
    inputs = fe(clips, sampling_rate=16_000, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(inputs.input_values, attention_mask=inputs.attention_mask).logits
    config = Wav2Vec2Config.from_file(path / "config.json")
    return [logits[i, : config.num_frames(len(c))] for i, c in enumerate(clips)]


@pytest.mark.parametrize(
    ("variant", "padding_changes_transformers"),
    [
        ("data2vec-ctc", True),
        ("hubert-ctc-batchnorm-oddkernel", True),
        ("hubert-ctc-stable-bias-noprojnorm", False),  # layer norms only: padding is masked
        ("conformer-ctc-relative", True),  # the depthwise conv reads the padding
        ("wavlm-ctc-stable-bias", False),
    ],
)
def test_padded_transformers_batches_differ_where_documented(
    checkpoints, variant, padding_changes_transformers
):
    """Why parity is clip by clip (docs/api.md): transformers' padded batch lets Data2Vec's
    later positional convs, HuBERT's batch norm and the Conformer's depthwise convs see
    padding; ours equals each clip alone."""
    path = checkpoints(variant)
    architecture = VARIANTS[variant][0]
    clips = [speech_like(0.6, seed=1), speech_like(2.5, seed=2)]
    padded = padded_reference(path, architecture, clips)
    alone = reference(path, architecture, clips[0])
    got = ours(load_model(str(path)), clips)[0]
    assert rel_err(got, alone) <= 1e-4
    assert (rel_err(padded[0], alone) > 1e-4) == padding_changes_transformers


@pytest.mark.parametrize(
    "architecture",
    ["UniSpeechForPreTraining", "UniSpeechSatForPreTraining", "Wav2Vec2ConformerForPreTraining"],
)
def test_pretraining_checkpoints_serve_embeddings_of_their_encoder(tmp_path, architecture):
    fam = FAMILIES[find(None, architecture).model_type]
    config = getattr(transformers, fam.name + "Config")(
        **TINY,
        codevector_dim=16,
        proj_codevector_dim=16,
        num_codevectors_per_group=8,
        architectures=[architecture],
    )
    torch.manual_seed(0)
    getattr(transformers, architecture)(config).save_pretrained(tmp_path)
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="--task embed"):
        load_model(str(tmp_path))
    loaded = load_model(str(tmp_path), task="embed")
    assert loaded.config.architecture == fam.architecture("Model")
    audio = speech_like(1.2, seed=3)
    (got,) = ours(loaded, [audio])
    expected = reference(tmp_path, fam.architecture("Model"), audio)
    assert rel_err(got, expected) <= 1e-4


def test_hubert_has_no_pretraining_class_to_strip(tmp_path, checkpoints):
    path = checkpoints("hubert-ctc")
    raw = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps({**raw, "architectures": ["HubertForPreTraining"]})
    )
    with pytest.raises(ModelError, match="supported Hubert heads"):
        load_model(str(tmp_path), task="embed")
