"""Bad requests get a clear 4xx with a JSON error, and the server stays healthy."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from tests.api.helpers import (
    MAX_SECONDS,
    MAX_UPLOAD,
    RATE,
    assert_error,
    riff,
    wav,
)
from tests.checkpoints import speech_like

pytestmark = pytest.mark.asyncio(loop_scope="module")


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
