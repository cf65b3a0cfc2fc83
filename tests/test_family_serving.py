"""Family architectures served end to end by a real server: a HuBERT CTC and a UniSpeechSat
XVector checkpoint answer every endpoint their head fits, and /v1/models names them."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.sync.client import connect

from service.wav2vec2.loading import load_model
from tests.checkpoints import speech_like
from tests.conftest import served

pytestmark = pytest.mark.slow  # a real server process

MODELS = {"hub": "hubert-ctc", "sat": "unispeech-sat-xvector"}


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, 16_000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("family-serving") / "server.log"
    args = [a for n, v in MODELS.items() for a in ("--model", f"{n}={checkpoints(v)}")]
    with served([*args, "--device", "cpu"], log) as (base, _):
        yield base
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def post(base: str, route: str, model: str, *files: bytes, **data: str) -> httpx.Response:
    names = ["file"] if len(files) == 1 else ["file1", "file2"]
    parts = {n: (f"{n}.wav", f) for n, f in zip(names, files)}
    return httpx.post(f"{base}/v1/{route}", files=parts, data={"model": model, **data}, timeout=60)


def test_models_name_their_architecture(server):
    cards = {c["id"]: c for c in httpx.get(f"{server}/v1/models").json()["data"]}
    assert {n: (c["architecture"], c["task"]) for n, c in cards.items()} == {
        "hub": ("HubertForCTC", "transcribe"),
        "sat": ("UniSpeechSatForXVector", "embed"),
    }


def test_hubert_transcribes_as_loaded_directly(server, checkpoints):
    audio = speech_like(1.5, seed=4)
    r = post(server, "transcribe", "hub", wav(audio))
    assert r.status_code == 200, r.text
    loaded = load_model(str(checkpoints(MODELS["hub"])))
    (logits,) = loaded.forward([audio])
    assert r.json()["text"] == loaded.tokenizer.decode(logits.argmax(-1).tolist()).text
    r = post(server, "align", "hub", wav(audio), text="A")
    assert r.status_code == 200, r.text
    assert [w["word"] for w in r.json()["words"]] == ["A"]
    r = post(server, "embed", "hub", wav(audio))
    assert r.status_code == 422 and r.json()["error"]["code"] == "wrong_task"


def test_hubert_streams(server):
    audio = speech_like(2.0, seed=7)
    with connect(server.replace("http", "ws") + "/v1/stream") as ws:
        ws.send(json.dumps({"type": "start", "model": "hub", "encoding": "pcm_f32le"}))
        assert json.loads(ws.recv())["type"] == "ready"
        ws.send(audio.tobytes())
        ws.send(json.dumps({"type": "stop"}))
        messages = [json.loads(m) for m in ws]
    assert [m["type"] for m in messages if m["type"] not in ("final", "partial")] == ["end"]
    assert messages[-1]["duration"] == pytest.approx(2.0)


def test_unispeech_sat_embeds_and_verifies(server, checkpoints):
    a, b = speech_like(1.5, seed=5), speech_like(2.2, seed=6)
    r = post(server, "embed", "sat", wav(a))
    assert r.status_code == 200, r.text
    loaded = load_model(str(checkpoints(MODELS["sat"])))
    (want,) = loaded.forward([a])
    got = np.asarray(r.json()["embedding"])
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    r = post(server, "verify", "sat", wav(a), wav(b))
    assert r.status_code == 200, r.text
    assert -1 <= r.json()["score"] <= 1
    r = post(server, "transcribe", "sat", wav(a))
    assert r.status_code == 422 and r.json()["error"]["code"] == "wrong_task"
