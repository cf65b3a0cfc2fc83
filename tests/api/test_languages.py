"""Languages per request on an MMS-style checkpoint: REST, OpenAI, align, the stream, the model
list, `auto` through a (forced) language identifier, and mixed-language batches."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import pytest_asyncio
from starlette.testclient import TestClient

from service.app import create_app
from service.audio import Audio
from service.schemas import Options
from tests.api.helpers import RATE, Served, assert_close, assert_error, serve, settings_for, wav
from tests.checkpoints import speech_like
from tests.mms_checkpoints import LANGUAGES, make_lid_checkpoint, make_mms_checkpoint

LID_LABELS = ["eng", "fra", "deu", "swh"]  # swh: identified languages may be unserved


@pytest.fixture(scope="module")
def paths(tmp_path_factory, checkpoints):
    root = tmp_path_factory.mktemp("languages")
    mms = make_mms_checkpoint(root)
    lid = make_lid_checkpoint(root, LID_LABELS, forced="fra")
    return {"mms": mms, "lid": lid, "asr": checkpoints("ctc-group")}


def mms_settings(checkpoints, paths, **overrides):
    base = settings_for(checkpoints, ["asr"])
    return base.model_copy(
        update={
            "model": [f"mms={paths['mms']}", f"asr={paths['asr']}"],
            "lid_model": [f"mms={paths['lid']}"],
            **overrides,
        }
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(checkpoints, paths):
    async with serve(mms_settings(checkpoints, paths)) as s:
        yield s


async def transcribe(served: Served, clip: np.ndarray, model: str = "mms", **fields):
    return await served.client.post(
        "/v1/transcribe",
        data={"model": model, **fields},
        files={"file": ("a.wav", wav(clip), "audio/wav")},
    )


in_module_loop = pytest.mark.asyncio(loop_scope="module")


@in_module_loop
async def test_models_list_languages_default_first(served):
    cards = {c["id"]: c for c in (await served.client.get("/v1/models")).json()["data"]}
    assert cards["mms"]["languages"] == ["eng", "deu", "fra"]
    assert cards["mms"]["language_identifier"] == "mms-lid"
    assert "languages" not in cards["asr"]


@in_module_loop
async def test_language_picks_adapter_and_vocabulary(served):
    clip = speech_like(1.2, seed=3)
    runtime = served.runtime("mms")
    answers = {}
    for lang in LANGUAGES:
        r = await transcribe(served, clip, language=lang)
        assert r.status_code == 200, r.text
        answers[lang] = r.json()
        assert answers[lang]["language"] == lang and "language_score" not in answers[lang]
        # The same clip through the model directly, in that language alone.
        (alone,) = runtime._loaded.forward([clip], [lang])
        text = runtime._engine.tokenizer(lang).decode(alone.argmax(-1).tolist()).text
        assert answers[lang]["text"] == text
    assert len({a["text"] for a in answers.values()}) == 3  # three adapters, three answers
    default = (await transcribe(served, clip)).json()
    assert default == answers["eng"]
    assert (await transcribe(served, clip, language="de")).json() == answers["deu"]  # ISO 639-1


@in_module_loop
@pytest.mark.parametrize(
    "model, language, needle",
    [
        ("mms", "xx", "'xx' is not served: model 'mms' serves eng, deu, fra"),
        ("mms", "es", "'es' is not served"),
        ("asr", "eng", "model 'asr' has no languages"),
        ("asr", "auto", "needs a language identifier"),
    ],
)
async def test_unknown_language_is_422_listing_the_served_ones(served, model, language, needle):
    r = await transcribe(served, speech_like(0.5), model=model, language=language)
    assert_error(r, 422, "unsupported_language")
    assert needle in r.json()["error"]["message"]


@in_module_loop
async def test_auto_uses_the_identifier_and_reports_its_score(served):
    clip = speech_like(1.0, seed=5)
    auto = (await transcribe(served, clip, language="auto")).json()
    fra = (await transcribe(served, clip, language="fra")).json()
    assert auto["language"] == "fra" and auto["language_score"] > 0.99
    assert {k: v for k, v in auto.items() if k != "language_score"} == fra


@in_module_loop
async def test_mixed_languages_share_a_batch_and_answer_as_alone(served):
    runtime = served.runtime("mms")
    batches: list[list[str | None]] = []
    original = runtime._batcher.run_batch

    def recording(clips):
        batches.append([c.language for c in clips])
        time.sleep(0.2)  # the next requests queue up behind this batch
        return original(clips)

    cases = [(speech_like(0.6 + 0.2 * i, seed=20 + i), lang) for i, lang in
             enumerate(["fra", "eng", "deu", "fra", "deu", "eng"])]  # fmt: skip
    runtime._batcher.run_batch = recording
    try:
        together = await asyncio.gather(*(transcribe(served, c, language=g) for c, g in cases))
        mixed = [b for b in batches if len(set(b)) > 1]
        assert mixed, batches
        alone = [await transcribe(served, c, language=g) for c, g in cases]
    finally:
        runtime._batcher.run_batch = original
    for t, a in zip(together, alone):
        assert t.status_code == a.status_code == 200
        assert_close(t.json(), a.json())


@in_module_loop
async def test_openai_language_maps_iso_639_1_and_one_language_models_ignore_it(served):
    clip = wav(speech_like(1.0, seed=7))
    fields = {"model": "mms", "language": "fr", "response_format": "verbose_json"}
    r = await served.client.post(
        "/v1/audio/transcriptions", data=fields, files={"file": ("a.wav", clip, "audio/wav")}
    )
    assert r.status_code == 200, r.text
    fra = (await transcribe(served, speech_like(1.0, seed=7), language="fra")).json()
    assert r.json()["language"] == "fra" and r.json()["text"] == fra["text"]
    fields = {"model": "asr", "language": "en", "response_format": "verbose_json"}
    r = await served.client.post(
        "/v1/audio/transcriptions", data=fields, files={"file": ("a.wav", clip, "audio/wav")}
    )
    assert r.status_code == 200 and r.json()["language"] == "en"
    fields = {"model": "mms", "language": "xx"}
    r = await served.client.post(
        "/v1/audio/transcriptions", data=fields, files={"file": ("a.wav", clip, "audio/wav")}
    )
    assert_error(r, 422, "unsupported_language")


@in_module_loop
async def test_align_uses_the_languages_vocabulary(served):
    clip = speech_like(1.5, seed=9)
    chars = {}
    for lang in ("deu", "eng"):
        fields = {"model": "mms", "text": "ÄÖ ßZ", "language": lang, "granularity": "both"}
        r = await served.client.post(
            "/v1/align", data=fields, files={"file": ("a.wav", wav(clip), "audio/wav")}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["language"] == lang and [w["word"] for w in body["words"]] == ["ÄÖ", "ßZ"]
        chars[lang] = [c["char"] for c in body["chars"]]
    assert chars["deu"] == ["Ä", "Ö", "ß", "Z"]  # each in German's vocabulary
    assert chars["eng"] == ["ÄÖ", "ßZ"]  # English lacks them: one run per word


@in_module_loop
async def test_predict_now_with_auto_identifies_each_clip(served):
    runtime = served.runtime("mms")
    clips = [Audio(speech_like(0.7, seed=s), 0.7, RATE, 1) for s in (1, 2)]
    auto = runtime.predict_now(clips, Options(language="auto"))
    fra = runtime.predict_now(clips, Options(language="fra"))
    for a, f in zip(auto, fra):
        assert a.language == "fra" and a.language_score > 0.99 and a.text == f.text


def test_stream_start_picks_the_language(checkpoints, paths):
    pcm = (speech_like(2.0, seed=4) * 32767).astype("<i2").tobytes()
    with TestClient(create_app(mms_settings(checkpoints, paths, lid_model=[]))) as client:
        finals = {}
        for lang in ("eng", "deu"):
            with client.websocket_connect("/v1/stream") as ws:
                ws.send_json({"type": "start", "model": "mms", "language": lang})
                ready = ws.receive_json()
                assert ready["type"] == "ready" and ready["language"] == lang
                ws.send_bytes(pcm)
                ws.send_json({"type": "stop"})
                texts = []
                while (message := ws.receive_json())["type"] != "end":
                    if message["type"] == "final":
                        texts.append(message["text"])
                finals[lang] = " ".join(texts)
        assert finals["eng"] != finals["deu"]
        for bad, code in (("xx", "unsupported_language"), ("auto", "unsupported_language")):
            with client.websocket_connect("/v1/stream") as ws:
                ws.send_json({"type": "start", "model": "mms", "language": bad})
                message = ws.receive_json()
                assert message["type"] == "error" and message["code"] == code
