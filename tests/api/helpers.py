"""Shared parts of the REST API tests: the app in process, WAV builders, assertions."""

from __future__ import annotations

import io
import math
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings

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
        """The ServedModel named `name`."""
        return self.app.state.models[name]


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Served]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Served(app, client)


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
