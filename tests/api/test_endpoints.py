"""Every endpoint, parity with `python -m service predict`, the ways audio can arrive, and batching
through the server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.api.helpers import (
    MODELS,
    RATE,
    TASK_OF,
    assert_close,
    wav,
)
from tests.checkpoints import speech_like

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Any]:
    """Test clips as WAV files on disk (for the CLI) and bytes (for the API)."""
    root = tmp_path_factory.mktemp("clips")
    clips = {
        "short": speech_like(1.3, seed=1),
        "mid": speech_like(2.6, seed=2),
        "long": speech_like(9.5, seed=3),  # over chunk_seconds: windows
    }
    out = {}
    for name, samples in clips.items():
        path = root / f"{name}.wav"
        path.write_bytes(wav(samples))
        out[name] = path
    return out


# ---- every endpoint, and parity with `python -m service predict` ----


async def test_each_task_endpoint(served, clips):
    data = clips["short"].read_bytes()
    for name, task in TASK_OF.items():
        r = await served.client.post(
            f"/v1/{task}", files={"file": ("a.wav", data)}, data={"model": name}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == name and body["task"] == task
        assert body["duration"] == pytest.approx(1.3)
        for header in ("x-queue-time", "x-inference-time", "x-total-time"):
            assert float(r.headers[header]) >= 0
        assert float(r.headers["x-inference-time"]) > 0
        assert float(r.headers["x-total-time"]) >= float(r.headers["x-inference-time"])
    r = await served.client.post(
        "/v1/classify", files={"file": ("a.wav", data)}, params={"top_k": 2}
    )
    assert len(r.json()["labels"]) == 2
    scores = [lab["score"] for lab in r.json()["labels"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.slow  # four `python -m service predict` processes
async def test_rest_equals_cli(served, clips, checkpoints):
    """The same files through REST and `python -m service predict` give the same Predictions."""
    files = [str(clips[n]) for n in ("short", "mid", "long")]
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "predict",
                "--model",
                f"{name}={checkpoints(variant)}",
                "--device",
                "cpu",
                "--chunk-seconds",
                "4",
                "--stride-seconds",
                "1",
                "--no-progress",
                *files,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, variant in MODELS.items()
    }
    try:
        rest = {}
        for name, task in TASK_OF.items():
            for f in files:
                r = await served.client.post(
                    f"/v1/{task}",
                    files={"file": ("x.wav", Path(f).read_bytes())},
                    data={"model": name},
                )
                assert r.status_code == 200, r.text
                rest[name, f] = r.json()
        for name, proc in procs.items():
            out, err = await asyncio.to_thread(proc.communicate, timeout=120)
            assert proc.returncode == 0, err
            lines = [json.loads(line) for line in out.splitlines()]
            assert [line.pop("file") for line in lines] == files
            for f, line in zip(files, lines):
                assert_close(rest[name, f], line, f"{name}:{f}")
    finally:
        for proc in procs.values():  # none left running when an assert failed
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_long_audio_windows(served, clips):
    """A clip over chunk_seconds: word and segment times are from the file start."""
    data = clips["long"].read_bytes()
    r = await served.client.post(
        "/v1/transcribe", content=data, headers={"content-type": "audio/wav"}
    )
    body = r.json()
    assert body["duration"] == pytest.approx(9.5)
    times = [(w["start"], w["end"]) for w in body["words"]]
    assert times and times[-1][1] > 4.0  # words after the first window
    flat = [t for pair in times for t in pair]
    assert flat == sorted(flat) and flat[0] >= 0 and flat[-1] <= 9.5
    r = await served.client.post("/v1/frames", content=data, headers={"content-type": "audio/wav"})
    assert all(0 <= s["start"] < s["end"] <= 9.5 for s in r.json()["segments"])


async def test_verify(served, clips):
    a, b = clips["short"].read_bytes(), clips["mid"].read_bytes()
    r = await served.client.post("/v1/verify", files={"file1": ("a.wav", a), "file2": ("a.wav", a)})
    assert r.status_code == 200, r.text
    same = r.json()
    assert same["score"] == pytest.approx(1.0, abs=1e-5) and same["same_speaker"] is True
    r = await served.client.post("/v1/verify", files={"file1": ("a.wav", a), "file2": ("b.wav", b)})
    other = r.json()
    assert -1 <= other["score"] < 1 and other["threshold"] == same["threshold"]
    assert other["same_speaker"] == (other["score"] >= other["threshold"])


async def test_models_health_metrics_docs(served):
    r = await served.client.get("/v1/models")
    cards = {c["id"]: c for c in r.json()["data"]}
    assert {n: c["task"] for n, c in cards.items()} == TASK_OF
    assert cards["cls"]["labels"] == ["yes", "no", "up", "down"] and "labels" not in cards["asr"]
    assert all(c["sampling_rate"] == RATE for c in cards.values())
    # No alphabet.json / language_model/: greedy; other tasks have no decoder.
    assert {n: c.get("decoder") for n, c in cards.items()} == {
        "asr": "greedy",
        "cls": None,
        "frm": None,
        "xv": None,
    }
    r = await served.client.get("/healthz")
    assert r.status_code == 200 and "x-total-time" in r.headers
    r = await served.client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    r = await served.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for metric in (
        "w2v_requests_total",
        "w2v_request_duration_seconds",
        "w2v_queue_duration_seconds",
        "w2v_inference_duration_seconds",
        "w2v_batch_size",
        "w2v_queue_depth",
        "w2v_audio_seconds_total",
        "w2v_active_streams",
    ):
        assert metric in r.text
    assert 'w2v_requests_total{endpoint="/v1/transcribe",status="200"}' in r.text
    r = await served.client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()
    spec = (await served.client.get("/openapi.json")).json()
    assert {"/v1/transcribe", "/v1/verify", "/v1/models", "/readyz"} <= set(spec["paths"])


# ---- the ways audio can arrive ----


async def test_body_forms(served, clips):
    """Multipart, raw body of several types, raw PCM; model and top_k as query or form fields."""
    samples = speech_like(1.3, seed=1)
    data = clips["short"].read_bytes()
    pcm16 = (np.clip(samples, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()
    c = served.client
    reference = (await c.post("/v1/classify", files={"file": ("a.wav", data)})).json()
    forms = [
        dict(content=data, headers={"content-type": "audio/wav"}),
        dict(content=data, headers={"content-type": "application/octet-stream"}),
        dict(content=data, headers={"content-type": "audio/x-wav"}),
        dict(files={"file": ("a.wav", data, "audio/wav")}, data={"model": "cls"}),
        dict(content=data, headers={"content-type": "audio/wav"}, params={"model": "cls"}),
        dict(
            content=pcm16,
            headers={"content-type": "application/octet-stream"},
            params={"sample_rate": RATE, "encoding": "pcm_s16le"},
        ),
        dict(
            files={"file": ("a.raw", pcm16)}, data={"sample_rate": "16000", "encoding": "pcm_s16le"}
        ),
    ]
    for kwargs in forms:
        r = await c.post("/v1/classify", **kwargs)
        assert r.status_code == 200, (kwargs.get("headers"), r.text)
        assert_close(r.json(), reference)
    f32 = samples.astype("<f4").tobytes()
    r = await c.post(
        "/v1/classify",
        content=f32,
        headers={"content-type": "application/octet-stream"},
        params={"sample_rate": RATE, "encoding": "pcm_f32le"},
    )
    assert r.status_code == 200 and r.json()["duration"] == pytest.approx(1.3)
    # top_k as query and as form field
    r = await c.post(
        "/v1/classify", content=data, headers={"content-type": "audio/wav"}, params={"top_k": 1}
    )
    assert len(r.json()["labels"]) == 1
    r = await c.post("/v1/classify", files={"file": ("a.wav", data)}, data={"top_k": "3"})
    assert len(r.json()["labels"]) == 3
    # another rate and stereo: resampled and averaged
    stereo = np.stack([samples, samples], axis=1)
    r = await c.post("/v1/embed", files={"file": ("s.wav", wav(stereo, 44_100))})
    assert r.status_code == 200 and r.json()["duration"] == pytest.approx(
        1.3 * RATE / 44_100, abs=1e-3
    )


# ---- batching through the server ----


async def test_concurrent_requests_share_a_batch_and_match_alone(served):
    runtime = served.runtime("asr")
    sizes: list[int] = []
    original = runtime._batcher.run_batch

    def recording(clips):
        sizes.append(len(clips))
        time.sleep(0.2)  # the next requests queue up behind this batch
        return original(clips)

    bodies = [wav(speech_like(0.8 + 0.3 * i, seed=10 + i)) for i in range(6)]
    runtime._batcher.run_batch = recording
    try:
        together = await asyncio.wait_for(
            asyncio.gather(
                *(
                    served.client.post(
                        "/v1/transcribe", content=b, headers={"content-type": "audio/wav"}
                    )
                    for b in bodies
                )
            ),
            60,
        )
        assert max(sizes) > 1, sizes
        sizes.clear()
        alone = [
            await served.client.post(
                "/v1/transcribe", content=b, headers={"content-type": "audio/wav"}
            )
            for b in bodies
        ]
        assert sizes == [1] * len(bodies)
    finally:
        runtime._batcher.run_batch = original
    for t, a in zip(together, alone):
        assert t.status_code == a.status_code == 200
        assert_close(t.json(), a.json())
    metrics = (await served.client.get("/metrics")).text
    counts = _samples(metrics, 'w2v_batch_size_count{model="asr"}')
    sums = _samples(metrics, 'w2v_batch_size_sum{model="asr"}')
    assert sums > counts  # some forward pass held more than one clip


def _samples(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))
