"""Checkpoint loading: formats, strictness, and clear errors for what we do not serve."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from service.errors import ModelError
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.features import FeatureExtractor
from service.wav2vec2.loading import load_model
from tests.checkpoints import make_checkpoint

transformers = pytest.importorskip("transformers")


@pytest.fixture
def ctc(tmp_path, checkpoints):
    path = tmp_path / "ctc"
    shutil.copytree(checkpoints("ctc-group"), path)
    return path


def edit_config(path, **changes):
    raw = json.loads((path / "config.json").read_text())
    raw.update(changes)
    (path / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model_type": "whisper"}, "model_type"),
        ({"architectures": ["HubertForXVector"]}, "architectures"),
        ({"feat_extract_norm": "batch"}, "feat_extract_norm"),
        ({"hidden_act": "swiglu"}, "hidden_act"),
        ({"architectures": ["Wav2Vec2ForMaskedLM"]}, "architectures"),
        ({"conv_kernel": [10, 3]}, "conv_dim"),
    ],
)
def test_unsupported_config_names_the_field(ctc, changes, field):
    edit_config(ctc, **changes)
    with pytest.raises(ModelError, match=field):
        load_model(str(ctc))


def test_missing_and_unexpected_keys_are_errors(ctc):
    weights = load_file(ctc / "model.safetensors")
    name = "lm_head.bias"
    extra = {k: v for k, v in weights.items() if k != name}
    extra["wav2vec2.surprise"] = torch.zeros(1)
    save_file(extra, ctc / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ModelError, match=r"missing \['lm_head.bias'\].*unexpected \['wav2vec2.surprise'\]"
    ):
        load_model(str(ctc))


def test_shape_mismatch_is_an_error(ctc):
    edit_config(ctc, vocab_size=99)
    with pytest.raises(ModelError, match="size mismatch"):
        load_model(str(ctc))


def test_pretraining_checkpoint_is_refused_with_a_hint_and_serves_embeddings(tmp_path):
    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=40,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        codevector_dim=16,
        proj_codevector_dim=16,
        num_codevectors_per_group=8,
        architectures=["Wav2Vec2ForPreTraining"],
    )
    transformers.Wav2Vec2ForPreTraining(config).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="not a serving task"):
        load_model(str(tmp_path))
    loaded = load_model(str(tmp_path), task="embed")
    assert loaded.task == "embed"


def test_task_must_match_the_head(ctc):
    with pytest.raises(ModelError, match="cannot classify"):
        load_model(str(ctc), task="classify")


def test_hub_id_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="--local-dir"):
        load_model("facebook/wav2vec2-base-960h-does-not-exist")


def test_not_a_directory(tmp_path):
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="not a checkpoint directory"):
        load_model(str(tmp_path / "file.bin"))
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path))


def test_processor_config_of_transformers_5(ctc):
    (ctc / "preprocessor_config.json").unlink()
    (ctc / "processor_config.json").write_text(
        json.dumps(
            {"feature_extractor": {"sampling_rate": 8000, "do_normalize": False, "feature_size": 1}}
        )
    )
    fe = FeatureExtractor.from_dir(ctc)
    assert (fe.sampling_rate, fe.do_normalize) == (8000, False)


def test_config_round_trip_keeps_unknown_fields(ctc):
    raw = json.loads((ctc / "config.json").read_text())
    config = Wav2Vec2Config.from_dict(raw)
    out = config.to_dict()
    assert out["transformers_version"] == raw["transformers_version"]
    assert out["conv_dim"] == raw["conv_dim"]
    assert config.samples_per_frame == 320
    assert config.num_frames(16_000) == 49


def test_frame_step_includes_the_adapter(tmp_path):
    path = make_checkpoint(tmp_path, "ctc-add-adapter")
    loaded = load_model(str(path))
    assert loaded.config.samples_per_frame == 320 * 2**2
    assert loaded.frame_seconds == pytest.approx(0.08)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_on_cpu_stays_close(ctc, dtype):
    from service.engine import Engine
    from tests.checkpoints import speech_like

    clip = speech_like(1.0)
    full = Engine(load_model(str(ctc))).run_batch([clip])[0]
    half = Engine(load_model(str(ctc), dtype=dtype)).run_batch([clip])[0]
    assert float(abs(full - half).max() / abs(full).max()) < 0.05


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_fp16_checkpoint_folds_weight_norm_in_fp32(ctc, stored):
    """A half-precision checkpoint served in fp32: the positional conv's g * v / ||v|| is
    computed on the fp32 values of g and v, as transformers does, not in the stored dtype."""
    weights = load_file(ctc / "model.safetensors")
    save_file({k: v.to(stored) for k, v in weights.items()}, ctc / "model.safetensors")
    halves = load_file(ctc / "model.safetensors")
    prefix = "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight."
    g, v = halves[prefix + "original0"].float(), halves[prefix + "original1"].float()
    expected = torch._weight_norm(v, g, dim=2)
    folded = load_model(str(ctc), dtype="float32").model.wav2vec2.encoder.pos_conv_embed.conv
    assert folded.weight.dtype == torch.float32
    assert torch.equal(folded.weight, expected)


@pytest.mark.parametrize("variant", ["ctc-group", "ctc-layer-stable-bias-bin"])
def test_fused_qkv_holds_the_weights_once(checkpoints, variant):
    """q, k and v stay as checkpoint modules (state_dict keys), as views of the fused
    projection: one copy of the weights, and the same values as the checkpoint's. (On MKL:
    on oneDNN the weights live packed in its layout and the views go, test_onednn.py.)"""
    path = checkpoints(variant)
    loaded = load_model(str(path), linear="mkl")
    reference = transformers.Wav2Vec2ForCTC.from_pretrained(path).state_dict()
    for i, layer in enumerate(loaded.model.wav2vec2.encoder.layers):
        attention = layer.attention
        d = attention.q_proj.in_features
        fused_weight, fused_bias = attention.qkv.weight, attention.qkv.bias
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            proj = getattr(attention, name)
            assert proj.weight.data_ptr() == fused_weight[j * d].data_ptr()
            assert proj.bias.data_ptr() == fused_bias[j * d :].data_ptr()
            key = f"wav2vec2.encoder.layers.{i}.attention.{name}"
            assert torch.equal(proj.weight, reference[key + ".weight"])
            assert torch.equal(proj.bias, reference[key + ".bias"])
    assert set(loaded.model.state_dict()) >= {k for k in reference if "q_proj" in k}


@pytest.mark.parametrize("value", [True, "0.5", 1.5, -2])
def test_a_verify_threshold_outside_the_cosine_range_is_an_error(ctc, value):
    assert load_model(str(ctc)).verify_threshold() == 0.7  # none named: the default
    edit_config(ctc, verify_threshold=value)
    with pytest.raises(ModelError, match="verify_threshold must be a number in"):
        load_model(str(ctc)).verify_threshold()


def test_a_checkpoint_may_name_its_long_audio_windows(ctc):
    """config.json chunk_seconds / stride_seconds: the windows a model trained on short clips
    wants; an operator's --chunk-seconds or --stride-seconds wins over them."""
    from service.runtime import ServedModel
    from service.settings import Settings

    def windows(settings: Settings) -> tuple[float, float]:
        return ServedModel(load_model(str(ctc)), settings).windows

    assert load_model(str(ctc)).window_seconds() is None
    assert windows(Settings()) == (30.0, 5.0)
    edit_config(ctc, chunk_seconds=8, stride_seconds=1.5)
    assert load_model(str(ctc)).window_seconds() == (8.0, 1.5)
    assert windows(Settings()) == (8.0, 1.5)
    assert windows(Settings(chunk_seconds=20)) == (20.0, 5.0)  # the operator's choice
    assert windows(Settings(stride_seconds=2)) == (30.0, 2.0)


@pytest.mark.parametrize("chunk, stride", [(True, 1), ("8", 1), (8, 4), (8, -1), (None, 1), (0, 0)])
def test_bad_long_audio_windows_are_an_error(ctc, chunk, stride):
    edit_config(ctc, chunk_seconds=chunk, stride_seconds=stride)
    with pytest.raises(ModelError, match="chunk_seconds and stride_seconds must be numbers"):
        load_model(str(ctc)).window_seconds()
