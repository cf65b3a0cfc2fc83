"""OpenAI-compatible transcriptions: the pure formatters, then the official client on uvicorn."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import soundfile as sf

from service.routes.openai import render, segments, subtitles, timestamp
from service.schemas import Prediction, Word
from tests.checkpoints import speech_like
from tests.conftest import free_port, wait_ready

KEY = "sk-test-key"
CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)([,.])(\d\d\d) --> (\d\d):(\d\d):(\d\d)([,.])(\d\d\d)$")


def words_at(*spans: tuple[float, float]) -> list[Word]:
    return [Word(word=f"W{i}", start=s, end=e) for i, (s, e) in enumerate(spans)]


def test_timestamp_formats() -> None:
    assert timestamp(3661.5, ",") == "01:01:01,500"
    assert timestamp(0.0004, ".") == "00:00:00.000"
    assert timestamp(59.9996, ".") == "00:01:00.000"


def test_segments_split_at_pauses_word_count_and_length() -> None:
    pause = words_at((0.0, 0.2), (0.3, 0.5), (1.2, 1.4))  # 0.7 s gap before the third
    assert [s["text"] for s in segments(pause, "W0 W1 W2", 2.0)] == ["W0 W1", "W2"]
    many = words_at(*((i * 0.3, i * 0.3 + 0.2) for i in range(13)))
    assert [len(s["text"].split()) for s in segments(many, "", 5.0)] == [12, 1]
    long = words_at(*((i * 1.0, i * 1.0 + 0.8) for i in range(9)))  # no pause > 0.5 s
    first, second = segments(long, "", 10.0)
    assert first["end"] - first["start"] <= 7.0 and second["start"] == 7.0
    seg = segments(pause, "W0 W1 W2", 2.0)[0]
    assert set(seg) == {
        "id",
        "seek",
        "start",
        "end",
        "text",
        "tokens",
        "temperature",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
    }
    assert segments([], "", 1.0) == []
    only = segments([], "HI", 1.5)  # text without word times: one segment for the clip
    assert [(s["start"], s["end"], s["text"]) for s in only] == [(0.0, 1.5, "HI")]


def test_render_formats() -> None:
    p = Prediction(
        model="m",
        task="transcribe",
        duration=2.0,
        text="W0 W1 W2",
        words=words_at((0.0, 0.2), (0.3, 0.5), (1.2, 1.4)),
    )
    assert json.loads(render(p, "json").body)["text"] == "W0 W1 W2"
    assert render(p, "text").body == b"W0 W1 W2\n"
    verbose = json.loads(render(p, "verbose_json", ["word"], "en").body)
    assert verbose["language"] == "en" and "segments" not in verbose
    assert verbose["words"][2] == {"word": "W2", "start": 1.2, "end": 1.4}
    assert subtitles(p, "srt") == (
        "1\n00:00:00,000 --> 00:00:00,500\nW0 W1\n\n2\n00:00:01,200 --> 00:00:01,400\nW2\n\n"
    )
    assert subtitles(p, "vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:00.500\nW0 W1\n")


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory) -> Iterator[str]:
    """A real uvicorn with a tiny CTC checkpoint named `tiny` and one API key."""
    port = free_port()
    log = tmp_path_factory.mktemp("openai") / "server.log"
    env = {**os.environ, "W2V_API_KEYS": KEY, "W2V_DEVICE": "cpu"}
    model = f"tiny={checkpoints('ctc-group')}"
    cmd = [sys.executable, "-m", "service", "serve", "--model", model, "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, log, 60)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    sf.write(path, speech_like(3.0, seed=3), 16_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def reference(server: str, wav: Path) -> dict:
    """What POST /v1/transcribe answers for the same file."""
    r = httpx.post(
        f"{server}/v1/transcribe",
        files={"file": wav.read_bytes()},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=30)


def transcribe(client: openai.OpenAI, wav: Path, **kw):
    with open(wav, "rb") as f:
        return client.audio.transcriptions.create(file=f, **{"model": "tiny", **kw})


@pytest.mark.slow  # the official client against `python -m service serve`
def test_json_and_text_match_transcribe(client, wav, reference) -> None:
    assert reference["words"], "the tiny model should give some words for speech-like noise"
    assert transcribe(client, wav).text == reference["text"]
    assert (
        transcribe(client, wav, model="whisper-1", response_format="json").text
        == (reference["text"])
    )
    assert transcribe(client, wav, response_format="text") == reference["text"] + "\n"


@pytest.mark.slow  # the official client against `python -m service serve`
def test_verbose_json_words_and_segments(client, wav, reference) -> None:
    v = transcribe(
        client, wav, response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert v.text == reference["text"] and v.duration == pytest.approx(reference["duration"])
    assert [w.model_dump() for w in v.words] == reference["words"]
    assert v.segments and " ".join(s.text for s in v.segments) == " ".join(
        w["word"] for w in reference["words"]
    )
    starts = [s.start for s in v.segments]
    assert starts == sorted(starts) and all(s.start < s.end for s in v.segments)
    default = transcribe(client, wav, response_format="verbose_json")
    assert default.words is None and default.segments == v.segments


@pytest.mark.slow  # the official client against `python -m service serve`
@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_parse_and_stay_inside_the_clip(client, wav, reference, fmt) -> None:
    body = transcribe(client, wav, response_format=fmt)
    if fmt == "vtt":
        assert body.startswith("WEBVTT\n\n")
        body = body.removeprefix("WEBVTT\n\n")
    cues = [c.splitlines() for c in body.strip().split("\n\n")]
    times = []
    for n, cue in enumerate(cues, 1):
        if fmt == "srt":
            assert cue.pop(0) == str(n)
        m = CUE.match(cue[0])
        assert m and m[4] == m[9] == ("," if fmt == "srt" else "."), cue[0]
        g = [int(x) for x in m.groups() if x not in ",."]
        times += [
            g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000,
            g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000,
        ]
        assert len(cue) == 2 and cue[1]
    assert times == sorted(times) and times[0] >= 0
    assert times[-1] <= reference["duration"] + 0.0005
    assert " ".join(c[-1] for c in cues) == " ".join(w["word"] for w in reference["words"])


@pytest.mark.slow  # the official client against `python -m service serve`
def test_errors_reach_the_client_as_its_exceptions(server, client, wav) -> None:
    short = io.BytesIO()
    sf.write(short, speech_like(0.01), 16_000, format="WAV")  # fewer samples than one frame
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="tiny", file=("a.wav", short.getvalue()))
    with pytest.raises(openai.APIStatusError) as info:  # 415: bytes that are no audio
        client.audio.transcriptions.create(model="tiny", file=("a.wav", b"nope"))
    assert info.value.status_code == 415
    with pytest.raises(openai.UnprocessableEntityError):
        transcribe(client, wav, response_format="diarized_json")
    with pytest.raises(openai.NotFoundError):  # a typo is not silently another model
        transcribe(client, wav, model="tinny")
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        transcribe(wrong, wav)


@pytest.mark.slow  # the official client against `python -m service serve`
def test_error_body_and_timing_headers(server, wav) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    url = f"{server}/v1/audio/transcriptions"
    bad = httpx.post(
        url, files={"file": wav.read_bytes()}, data={"response_format": "x"}, headers=auth
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_field"
    ok = httpx.post(url, files={"file": wav.read_bytes()}, headers=auth, timeout=30)
    assert ok.status_code == 200 and ok.headers["x-model"] == "tiny"
    assert all(
        float(ok.headers[h]) >= 0 for h in ("x-queue-time", "x-inference-time", "x-total-time")
    )
    assert httpx.post(url, files={"file": wav.read_bytes()}).status_code == 401
