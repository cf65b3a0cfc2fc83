"""WS /v1/stream in process (Starlette's TestClient): what the route adds to the stream."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient

from service.app import create_app
from service.errors import ServiceError
from service.routes.stream import StartRequest, close_code, parse_control, parse_start
from service.schemas import ErrorMessage
from tests.api.helpers import RATE, settings_for
from tests.api.test_decoding import EXAMPLES, HAVE_LM, HEARD, LM_TEXT, greedy_text, misheard
from tests.api.test_decoding import settings as demo_settings
from tests.checkpoints import speech_like


def audio_seconds(client: TestClient, model: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf'^w2v_audio_seconds_total{{model="{model}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_streamed_audio_is_counted_as_processed_audio(checkpoints):
    settings = settings_for(checkpoints, ["asr"])
    pcm = (speech_like(1.5) * 32767).astype("<i2").tobytes()
    with TestClient(create_app(settings)) as client:
        before = audio_seconds(client, "asr")
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_json({"type": "start", "sample_rate": RATE // 2})  # 8 kHz: 3 s of audio
            assert ws.receive_json()["type"] == "ready"
            for i in range(0, len(pcm), 3000):  # frames split mid-sample, too
                ws.send_bytes(pcm[i : i + 3000])
            ws.send_json({"type": "stop"})
            while (message := ws.receive_json())["type"] != "end":
                assert message["type"] in ("partial", "final")
        assert message["duration"] == 3.0
        assert np.isclose(audio_seconds(client, "asr") - before, 3.0)


@pytest.mark.parametrize(
    "text, code",
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"type": 3}', "invalid_message"),
        ('{"type": "start", "encoding": "mp3"}', "invalid_encoding"),
        ('{"type": "start", "sample_rate": 12.5}', "invalid_sample_rate"),
        ('{"type": "start", "sample_rate": 100}', "invalid_sample_rate"),
        ('{"type": "start", "interim_results": "yes"}', "invalid_field"),
        ('{"type": "start", "decoder": "lm"}', "invalid_decoder"),
        ('{"type": "start", "beam_width": -2}', "invalid_beam_width"),
        ('{"type": "start", "hotwords": 5}', "invalid_hotwords"),
        ('{"type": "start", "hotwords": ["ok", 5]}', "invalid_hotwords"),
    ],
)
def test_bad_control_frames_are_policy_errors(text, code):
    with pytest.raises(ServiceError) as err:
        parse_start(parse_control(text))
    assert (err.value.code, close_code(err.value)) == (code, 1008)
    assert json.dumps(ErrorMessage(**err.value.body()["error"]).model_dump())


def test_start_defaults_match_the_contract():
    assert parse_start(parse_control('{"type": "start"}')) == StartRequest()
    start = parse_start(
        {"type": "start", "sample_rate": 44_100, "encoding": "pcm_f32le", "model": "m"}
    )
    assert (start.sample_rate, start.encoding, start.model) == (44_100, "pcm_f32le", "m")
    start = parse_start({"type": "start", "decoder": "beam", "hotwords": "paris", "alpha": 1})
    assert (start.options.decoder, start.options.hotwords, start.options.alpha) == (
        "beam",
        ("paris",),
        1.0,
    )


def stream_text(client: TestClient, start: dict, name: str = "hello_world") -> str:
    x, rate = sf.read(EXAMPLES / f"{name}.wav", dtype="float32")
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "sample_rate": rate, **start})
        assert ws.receive_json()["type"] == "ready"
        for i in range(0, len(pcm), 8000):
            ws.send_bytes(pcm[i : i + 8000])
        ws.send_json({"type": "stop"})
        finals = []
        while (message := ws.receive_json())["type"] != "end":
            if message["type"] == "final":
                finals.append(message["text"])
            else:
                assert message["type"] == "partial", message
    return " ".join(finals)


@pytest.mark.skipif(not HAVE_LM, reason="the demo model with its LM is not here")
def test_stream_finals_use_the_beam_as_asked():
    """Start fields choose how finals are decoded (partials stay greedy)."""
    with TestClient(create_app(demo_settings())) as client:
        assert stream_text(client, {"decoder": "beam"}) == LM_TEXT["hello_world"]
        assert stream_text(client, {"decoder": "greedy"}) == greedy_text("hello_world")
        heard = misheard(HEARD)  # which the LM alone corrects
        assert heard in stream_text(client, {"hotwords": [heard.lower()]}, HEARD).split()
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_json({"type": "start", "beam_width": 0})
            assert ws.receive_json()["code"] == "invalid_beam_width"
