"""WavLM and Wav2Vec2-Conformer checkpoints served end to end: a WavLM XVector answers embed and
verify, a Conformer CTC answers transcribe and align, and /v1/models names each architecture."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
import torch

from service.wav2vec2.loading import load_model
from tests.api.helpers import Served, serve, settings_for, wav
from tests.checkpoints import speech_like

pytestmark = pytest.mark.asyncio(loop_scope="module")
SERVED = {"wavlm-sv": "wavlm-xvector-weighted", "conformer-asr": "conformer-ctc-rotary-layer-bias"}


def as_sent(samples: np.ndarray) -> np.ndarray:
    """What the server decodes from wav(samples): 16-bit PCM, so quantised."""
    decoded, _ = sf.read(io.BytesIO(wav(samples)), dtype="float32")
    return decoded


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(checkpoints) -> AsyncIterator[Served]:
    models = [f"{name}={checkpoints(variant)}" for name, variant in SERVED.items()]
    async with serve(settings_for(checkpoints, [], model=models)) as s:
        yield s


async def test_models_name_the_architecture(served):
    r = await served.client.get("/v1/models")
    cards = {c["id"]: c for c in r.json()["data"]}
    assert {n: (c["architecture"], c["task"]) for n, c in cards.items()} == {
        "wavlm-sv": ("WavLMForXVector", "embed"),
        "conformer-asr": ("Wav2Vec2ConformerForCTC", "transcribe"),
    }


async def test_wavlm_xvector_embeds_and_verifies(served, checkpoints):
    a, b = speech_like(1.3, seed=1), speech_like(2.1, seed=2)
    r = await served.client.post(
        "/v1/embed", files={"file": ("a.wav", wav(a))}, data={"model": "wavlm-sv"}
    )
    assert r.status_code == 200, r.text
    got = np.array(r.json()["embedding"])
    loaded = load_model(str(checkpoints(SERVED["wavlm-sv"])))
    want = loaded.forward([as_sent(a)])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    files = {"file1": ("a.wav", wav(a)), "file2": ("b.wav", wav(b))}
    r = await served.client.post("/v1/verify", files=files, data={"model": "wavlm-sv"})
    assert r.status_code == 200, r.text
    assert -1 <= r.json()["score"] <= 1


async def test_conformer_ctc_transcribes_and_aligns(served, checkpoints):
    audio = speech_like(2.0, seed=5)
    r = await served.client.post(
        "/v1/transcribe", files={"file": ("a.wav", wav(audio))}, data={"model": "conformer-asr"}
    )
    assert r.status_code == 200, r.text
    loaded = load_model(str(checkpoints(SERVED["conformer-asr"])))
    logits = torch.from_numpy(loaded.forward([as_sent(audio)])[0])
    assert r.json()["text"] == loaded.tokenizer.decode(logits.argmax(-1).tolist()).text
    r = await served.client.post(
        "/v1/align",
        files={"file": ("a.wav", wav(audio))},
        data={"model": "conformer-asr", "text": "HELLO THERE"},
    )
    assert r.status_code == 200, r.text
    assert [w["word"] for w in r.json()["words"]] == ["HELLO", "THERE"]
