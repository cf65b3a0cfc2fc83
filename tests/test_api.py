"""The REST API end to end: the real app in process (httpx + ASGITransport, with its lifespan)
serving four tiny random checkpoints at once."""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from tests.checkpoints import speech_like

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODELS = {"asr": "ctc-group", "cls": "classify-weighted", "frm": "frames-weighted", "xv": "xvector"}
TASK_OF = {"asr": "transcribe", "cls": "classify", "frm": "frames", "xv": "embed"}
RATE = 16_000
MAX_UPLOAD = 1_500_000
MAX_SECONDS = 30.0


def wav(samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def riff(
    payload: bytes, rate: int, channels: int = 1, bits: int = 16, tag: int = 1, size: int = -1
) -> bytes:
    """A hand-made WAV header (to lie about rates and sizes) followed by payload."""
    width = bits // 8 * channels
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * width, width, bits)
    size = len(payload) if size < 0 else size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size)
    return b"RIFF" + struct.pack("<I", min(len(body) + size, 0xFFFFFFFF)) + body + payload


def settings_for(checkpoints: Callable[[str], Any], names: list[str], **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        model=[f"{n}={checkpoints(MODELS[n])}" for n in names],
        device="cpu",
        max_batch_size=4,
        max_wait_ms=50,
        max_upload_bytes=MAX_UPLOAD,
        max_audio_seconds=MAX_SECONDS,
        chunk_seconds=4,
        stride_seconds=1,
    )
    return Settings(**{**values, **overrides})


@dataclass
class Served:
    app: FastAPI
    client: httpx.AsyncClient

    def runtime(self, name: str) -> Any:
        return self.app.state.runtimes[name]


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Served]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Served(app, client)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(checkpoints) -> AsyncIterator[Served]:
    async with serve(settings_for(checkpoints, list(MODELS))) as s:
        yield s


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


def assert_close(a: Any, b: Any, path: str = "") -> None:
    """Equal JSON, floats to 1e-4 (batches of other shapes change float rounding only)."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


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
    original = runtime.batcher.run_batch

    def recording(clips):
        sizes.append(len(clips))
        time.sleep(0.2)  # the next requests queue up behind this batch
        return original(clips)

    bodies = [wav(speech_like(0.8 + 0.3 * i, seed=10 + i)) for i in range(6)]
    runtime.batcher.run_batch = recording
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
        runtime.batcher.run_batch = original
    for t, a in zip(together, alone):
        assert t.status_code == a.status_code == 200
        assert_close(t.json(), a.json())
    metrics = (await served.client.get("/metrics")).text
    counts = _samples(metrics, 'w2v_batch_size_count{model="asr"}')
    sums = _samples(metrics, 'w2v_batch_size_sum{model="asr"}')
    assert sums > counts  # some forward pass held more than one clip


def _samples(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


# ---- bad requests ----


def _bad_requests() -> list[tuple[str, dict[str, Any], int, str | None]]:
    """(id, request, status, code): every one a JSON error with that status."""
    ok = speech_like(1.0, seed=5)
    ok_wav = wav(ok)
    raw = {"content-type": "audio/wav"}
    octet = {"content-type": "application/octet-stream"}
    nan = ok.copy()
    nan[100] = np.nan
    inf = ok.copy()
    inf[5] = np.inf
    pcm16 = (ok * 32767).astype("<i2").tobytes()
    big = b"\0" * (MAX_UPLOAD + 200_000)

    async def chunks():
        for _ in range(40):
            yield b"\0" * 50_000

    def post(path: str = "/v1/transcribe", **kw: Any) -> dict[str, Any]:
        return {"method": "POST", "url": path, **kw}

    return [
        ("empty body", post(content=b"", headers=raw), 400, "empty_audio"),
        ("empty multipart file", post(files={"file": ("a.wav", b"")}), 400, "empty_audio"),
        ("not audio", post(content=b"hello world, not audio " * 50, headers=raw), 415, None),
        ("png as audio", post(content=b"\x89PNG\r\n\x1a\n" + bytes(500), headers=raw), 415, None),
        ("truncated header", post(content=ok_wav[:30], headers=raw), 400, None),
        ("header only", post(content=ok_wav[:44], headers=raw), 400, "empty_audio"),
        (
            "riff garbage",
            post(content=b"RIFF\xff\xff\xff\xffWAVEfmt " + bytes(300), headers=raw),
            400,
            None,
        ),
        (
            "nan float wav",
            post(content=wav(nan, subtype="FLOAT"), headers=raw),
            400,
            "non_finite_audio",
        ),
        (
            "inf float wav",
            post(content=wav(inf, subtype="FLOAT"), headers=raw),
            400,
            "non_finite_audio",
        ),
        (
            "nan pcm_f32le",
            post(
                content=nan.astype("<f4").tobytes(),
                headers=octet,
                params={"sample_rate": RATE, "encoding": "pcm_f32le"},
            ),
            400,
            "non_finite_audio",
        ),
        (
            "wav with 0 bits per sample",
            post(content=riff(pcm16, RATE, bits=0), headers=raw),
            400,
            "undecodable_audio",
        ),
        ("0 Hz wav", post(content=riff(pcm16, 0), headers=raw), 400, None),
        ("1 Hz wav", post(content=riff(pcm16, 1), headers=raw), 400, "invalid_sample_rate"),
        (
            "1 MHz wav",
            post(content=riff(pcm16, 1_000_000), headers=raw),
            400,
            "invalid_sample_rate",
        ),
        (
            "pcm 0 Hz",
            post(content=pcm16, headers=octet, params={"sample_rate": 0, "encoding": "pcm_s16le"}),
            422,
            None,
        ),
        (
            "pcm 1 Hz",
            post(content=pcm16, headers=octet, params={"sample_rate": 1, "encoding": "pcm_s16le"}),
            400,
            "invalid_sample_rate",
        ),
        (
            "pcm 1 MHz",
            post(
                content=pcm16, headers=octet, params={"sample_rate": 10**6, "encoding": "pcm_s16le"}
            ),
            400,
            "invalid_sample_rate",
        ),
        (
            "pcm no rate",
            post(content=pcm16, headers=octet, params={"encoding": "pcm_s16le"}),
            422,
            "missing_sample_rate",
        ),
        (
            "pcm rate abc",
            post(
                content=pcm16, headers=octet, params={"sample_rate": "abc", "encoding": "pcm_s16le"}
            ),
            422,
            "invalid_field",
        ),
        (
            "bad encoding",
            post(content=pcm16, headers=octet, params={"sample_rate": RATE, "encoding": "mp7"}),
            422,
            "invalid_encoding",
        ),
        (
            "odd pcm length",
            post(
                content=pcm16 + b"\0",
                headers=octet,
                params={"sample_rate": RATE, "encoding": "pcm_s16le"},
            ),
            400,
            "invalid_pcm_length",
        ),
        (
            "pcm 0 channels",
            post(
                content=pcm16,
                headers=octet,
                params={"sample_rate": RATE, "encoding": "pcm_s16le", "channels": 0},
            ),
            422,
            "invalid_field",
        ),
        ("too short", post(content=wav(ok[:100]), headers=raw), 400, "audio_too_short"),
        (
            "too long",
            post(
                content=wav(np.zeros(int(8000 * (MAX_SECONDS + 1)), np.float32), 8000), headers=raw
            ),
            413,
            "audio_too_long",
        ),
        ("too large by length", post(content=big, headers=raw), 413, "payload_too_large"),
        ("too large chunked", post(content=chunks(), headers=raw), 413, "payload_too_large"),
        ("too large multipart", post(files={"file": ("a.wav", big)}), 413, "payload_too_large"),
        (
            "top_k abc",
            post("/v1/classify", content=ok_wav, headers=raw, params={"top_k": "abc"}),
            422,
            "invalid_field",
        ),
        (
            "top_k 0",
            post("/v1/classify", content=ok_wav, headers=raw, params={"top_k": 0}),
            422,
            "invalid_field",
        ),
        (
            "top_k form -1",
            post("/v1/classify", files={"file": ("a.wav", ok_wav)}, data={"top_k": "-1"}),
            422,
            "invalid_field",
        ),
        (
            "unknown model",
            post(content=ok_wav, headers=raw, params={"model": "nope"}),
            404,
            "model_not_found",
        ),
        (
            "wrong task",
            post("/v1/classify", content=ok_wav, headers=raw, params={"model": "asr"}),
            422,
            "wrong_task",
        ),
        (
            "verify with a classifier",
            post(
                "/v1/verify",
                files={"file1": ("a", ok_wav), "file2": ("b", ok_wav)},
                data={"model": "cls"},
            ),
            422,
            "wrong_task",
        ),
        ("missing file field", post(files={"audio": ("a.wav", ok_wav)}), 422, "missing_file"),
        ("only fields", post(data={"model": "asr"}, files={"x": ("", b"")}), 422, "missing_file"),
        (
            "verify one file",
            post("/v1/verify", files={"file1": ("a.wav", ok_wav)}),
            422,
            "missing_file",
        ),
        ("urlencoded form", post(data={"model": "asr"}), 422, "missing_file"),
        (
            "text/plain",
            post(content=ok_wav, headers={"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        ("json", post(json={"file": "abc"}), 415, "unsupported_media_type"),
        (
            "multipart no boundary",
            post(content=ok_wav, headers={"content-type": "multipart/form-data"}),
            400,
            "invalid_request",
        ),
        (
            "multipart garbage",
            post(
                content=b"--xx\r\nnonsense",
                headers={"content-type": "multipart/form-data; boundary=xx"},
            ),
            422,
            "missing_file",
        ),
        (
            "too many files",
            post(files=[(f"f{i}", ("a.wav", b"x")) for i in range(8)]),
            400,
            "invalid_request",
        ),
        (
            "too many fields",
            post(data={f"k{i}": "v" for i in range(60)}, files={"file": ("a.wav", ok_wav)}),
            400,
            "invalid_request",
        ),
        (
            "just over the limit",
            post(content=bytes(MAX_UPLOAD + 10), headers=raw),
            413,
            "payload_too_large",
        ),
        (
            "GET on POST route",
            {"method": "GET", "url": "/v1/transcribe"},
            405,
            "method_not_allowed",
        ),
        ("POST on GET route", post("/v1/models"), 405, "method_not_allowed"),
        ("unknown path", post("/v1/translate", content=ok_wav, headers=raw), 404, "not_found"),
        ("unknown GET path", {"method": "GET", "url": "/nothing/here"}, 404, "not_found"),
    ]


BAD = _bad_requests()


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
async def test_bad_request(served, case):
    _, request, status, code = case
    r = await asyncio.wait_for(served.client.request(**request), 30)
    assert_error(r, status, code)
    assert float(r.headers["x-total-time"]) >= 0  # errors carry the timing headers too


async def test_still_healthy_after_bad_requests(served):
    assert len(BAD) >= 30
    assert (await served.client.get("/healthz")).status_code == 200
    assert (await served.client.get("/readyz")).status_code == 200
    r = await served.client.post(
        "/v1/transcribe", content=wav(speech_like(1.0)), headers={"content-type": "audio/wav"}
    )
    assert r.status_code == 200


async def test_odd_but_valid_audio(served):
    """64 channels are averaged; a header claiming gigabytes is read as far as the data goes."""
    ok = speech_like(1.0, seed=6)
    many = np.repeat(ok[:8000, None], 64, axis=1) * 0.5  # 1 MB
    r = await served.client.post(
        "/v1/classify", content=wav(many), headers={"content-type": "audio/wav"}
    )
    assert r.status_code == 200, r.text
    pcm16 = (ok * 32767).astype("<i2").tobytes()
    liar = riff(pcm16, RATE, size=2_000_000_000)
    r = await served.client.post(
        "/v1/classify", content=liar, headers={"content-type": "audio/wav"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["duration"] == pytest.approx(1.0)


# ---- overload, faults, keys, CORS, lifespan: one small app each ----


def slowed(
    runtime: Any, seconds: float, fail: Callable[[int], bool] = lambda n: False
) -> list[int]:
    """Make the runtime's batches take `seconds` and raise where fail(batch number); returns
    the sizes of the batches run."""
    original = runtime.batcher.run_batch
    sizes: list[int] = []

    def run(clips):
        sizes.append(len(clips))
        time.sleep(seconds)
        if fail(len(sizes)):
            raise RuntimeError("injected fault")
        return original(clips)

    runtime.batcher.run_batch = run
    return sizes


async def test_overload_answers_429_and_nothing_hangs(checkpoints):
    settings = settings_for(checkpoints, ["asr"], max_queue=2, max_batch_size=1, max_wait_ms=0)
    async with serve(settings) as s:
        slowed(s.runtime("asr"), 0.3)
        body = wav(speech_like(0.5))
        posts = [
            s.client.post("/v1/transcribe", content=body, headers={"content-type": "audio/wav"})
            for _ in range(10)
        ]
        answers = await asyncio.wait_for(asyncio.gather(*posts), 60)
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) == {200, 429}, statuses
        for r in answers:
            if r.status_code == 429:
                assert_error(r, 429, "overloaded")
                assert int(r.headers["retry-after"]) >= 1
        # once the queue has room again, requests succeed
        r = await s.client.post(
            "/v1/transcribe", content=body, headers={"content-type": "audio/wav"}
        )
        assert r.status_code == 200


async def test_a_refused_long_clip_leaves_no_windows_behind(checkpoints):
    """A clip with more windows than the queue holds: 429, and its queued windows are dropped."""
    settings = settings_for(checkpoints, ["asr"], max_queue=2, max_batch_size=1, max_wait_ms=0)
    async with serve(settings) as s:
        sizes = slowed(s.runtime("asr"), 0.3)
        body = wav(speech_like(20.0))
        r = await asyncio.wait_for(
            s.client.post("/v1/transcribe", content=body, headers={"content-type": "audio/wav"}), 30
        )
        assert_error(r, 429, "overloaded")
        await asyncio.sleep(1.0)
        assert sum(sizes) <= 1, sizes  # at most the window that had already started


async def test_an_abandoned_request_is_not_computed(checkpoints):
    """The client leaves while its clip waits behind a running batch: it never runs."""
    async with serve(settings_for(checkpoints, ["asr"], max_batch_size=1, max_wait_ms=0)) as s:
        sizes = slowed(s.runtime("asr"), 0.6)
        body = wav(speech_like(0.5))
        first = asyncio.ensure_future(
            s.client.post("/v1/transcribe", content=body, headers={"content-type": "audio/wav"})
        )
        while not sizes:  # the first batch is computing
            await asyncio.sleep(0.01)
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/transcribe",
            "raw_path": b"/v1/transcribe",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"audio/wav"), (b"content-length", b"%d" % len(body))],
            "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
        }
        second = asyncio.ensure_future(s.app(scope, receive, send))
        await asyncio.sleep(0.2)  # decoded and queued behind the first batch
        gone.set()
        await asyncio.wait_for(second, 5)
        assert (await asyncio.wait_for(first, 10)).status_code == 200
        await asyncio.sleep(0.8)  # the worker is free again: the second clip must not run
        assert sizes == [1], sizes
        assert sent[0]["status"] == 499


async def test_a_failing_batch_fails_only_its_requests(checkpoints):
    async with serve(settings_for(checkpoints, ["asr"], max_wait_ms=0)) as s:
        slowed(s.runtime("asr"), 0.0, fail=lambda n: n == 1)
        body = wav(speech_like(0.5))
        raw = {"content-type": "audio/wav"}
        r = await s.client.post("/v1/transcribe", content=body, headers=raw)
        assert_error(r, 500, "inference_failed")
        assert "x-total-time" in r.headers
        r = await s.client.post("/v1/transcribe", content=body, headers=raw)
        assert r.status_code == 200, r.text
        assert (await s.client.get("/readyz")).status_code == 200


async def test_api_keys_and_cors(checkpoints):
    origin = "https://app.example"
    settings = settings_for(checkpoints, ["cls"], api_keys=["k1", "k2"], cors_origins=[origin])
    async with serve(settings) as s:
        c = s.client
        body = wav(speech_like(0.5))
        for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "k2"}):
            assert_error(await c.get("/v1/models", headers=headers), 401, "unauthorized")
            r = await c.post(
                "/v1/classify", content=body, headers={**headers, "content-type": "audio/wav"}
            )
            assert_error(r, 401, "unauthorized")
        r = await c.post(
            "/v1/classify",
            content=body,
            headers={"authorization": "Bearer k2", "content-type": "audio/wav"},
        )
        assert r.status_code == 200, r.text
        assert (
            await c.get("/v1/models", headers={"authorization": "bearer k1"})
        ).status_code == 200
        for path in ("/healthz", "/readyz"):
            assert (await c.get(path)).status_code == 200
        preflight = {
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        }
        r = await c.options("/v1/classify", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == origin
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = await c.post(
            "/v1/classify",
            content=body,
            headers={"origin": origin, "authorization": "Bearer k1", "content-type": "audio/wav"},
        )
        assert r.headers["access-control-allow-origin"] == origin
        assert "x-total-time" in r.headers["access-control-expose-headers"]
        # the middleware's own refusals carry CORS headers too (CORS is outermost)
        big = bytes(MAX_UPLOAD + 100_000)
        r = await c.post(
            "/v1/classify", content=big, headers={"origin": origin, "content-type": "audio/wav"}
        )
        assert r.status_code == 413 and r.headers["access-control-allow-origin"] == origin
        r = await c.options("/v1/classify", headers={**preflight, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_readiness_follows_the_lifespan(checkpoints):
    app = create_app(settings_for(checkpoints, ["cls"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/readyz")  # models not loaded yet
        assert r.status_code == 503 and r.json()["status"] == "starting"
        assert (await c.get("/healthz")).status_code == 200
        r = await c.post(
            "/v1/classify", content=wav(speech_like(0.5)), headers={"content-type": "audio/wav"}
        )
        assert_error(r, 503, "unavailable")
        assert r.headers["retry-after"]
        async with app.router.lifespan_context(app):
            assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 503


async def test_decoder_refuses_a_wav_with_zero_bits_per_sample():
    """A header PyAV opens without a codec context is refused as undecodable, not a crash."""
    from service.audio import decode_audio
    from service.errors import AudioError

    data = riff(bytes(16_000), RATE, bits=0)
    with pytest.raises(AudioError):
        decode_audio(data, RATE, max_seconds=30, min_samples=400)
