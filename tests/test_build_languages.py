"""service/build.py for language adapters: per-language beam decoders (<lang>/) and the
language identifier's configuration."""

from __future__ import annotations

import json
import shutil

import pytest

from service.audio import Audio
from service.build import build_model, build_models
from service.errors import ModelError, ServiceError
from service.schemas import Options
from service.settings import Settings
from tests.checkpoints import speech_like
from tests.lm_cases import alphabet_labels, write_decoder
from tests.mms_checkpoints import make_lid_checkpoint, make_mms_checkpoint


@pytest.fixture(scope="module")
def mms(tmp_path_factory):
    return make_mms_checkpoint(tmp_path_factory.mktemp("mms-lm"))


def with_french_lm(mms, tmp_path, extra_labels: list[str]):
    path = tmp_path / "mms"
    shutil.copytree(mms, path)
    write_decoder(path / "fra")
    labels = {"labels": alphabet_labels() + extra_labels, "is_bpe": False}
    (path / "fra" / "alphabet.json").write_text(json.dumps(labels))
    return path


def test_a_language_folder_gives_that_language_its_lm(mms, tmp_path):
    path = with_french_lm(mms, tmp_path, ["É", "Ç"])
    served = build_model(Settings(device="cpu"), "mms", str(path), warmup=False)
    assert served.card().decoder == "greedy"  # the default, eng, has no LM
    engine = served._engine
    assert engine.decoder_kind(Options(language="fra")) == "beam"
    assert engine.decoder_kind(Options(language="deu")) == "greedy"
    assert engine.decoder_for("fra") is not None and engine.decoder_for("fra").lm is not None
    clip = Audio(speech_like(1.0, seed=1), 1.0, 16_000, 1)
    (fra,) = served.predict_now([clip], Options(language="fra"))
    assert fra.language == "fra" and fra.text is not None


def test_a_language_alphabet_is_checked_against_its_vocabulary(mms, tmp_path):
    path = with_french_lm(mms, tmp_path, [])  # eng's 16 labels, fra has 18 tokens
    with pytest.raises(ModelError, match="alphabet.json has 16 labels but the model has 18"):
        build_model(Settings(device="cpu"), "mms", str(path), warmup=False)


def test_identifier_misconfigurations_fail_at_start_up(mms, tmp_path, checkpoints):
    lid = make_lid_checkpoint(tmp_path, ["swh", "yor"], forced="swh")
    settings = Settings(device="cpu", model=[f"mms={mms}"], lid_model=[f"mms={lid}"])
    with pytest.raises(ModelError, match="none of its labels \\(swh, yor\\) names a language"):
        build_models(settings)
    asr = checkpoints("ctc-group")
    settings = Settings(device="cpu", model=[f"asr={asr}"], lid_model=[f"asr={lid}"])
    with pytest.raises(ModelError, match="asr has no language adapters"):
        build_models(settings)
    settings = Settings(device="cpu", model=[f"mms={mms}"], lid_model=[f"typo={lid}"])
    with pytest.raises(ServiceError, match=r"lid_model names \['typo'\]"):
        build_models(settings)
    with pytest.raises(ValueError, match="lid_model takes ASR_NAME=LID_PATH_OR_HUB_ID"):
        Settings(lid_model=["just-a-path"])
