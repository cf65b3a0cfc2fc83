"""Dependencies shared by the routers: API keys, model choice, audio from the request."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.datastructures import UploadFile

from service.audio import Audio, decode_pcm
from service.batcher import Timed
from service.errors import (
    AudioError,
    BadFieldError,
    NotFoundError,
    ServiceError,
    TooLargeError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from service.options import parse_options
from service.runtime import ServedModel, TimedPrediction
from service.sandbox import decode_isolated, decode_limits
from service.schemas import Options
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

RAW_TYPES = ("audio/", "application/octet-stream", "video/")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` header, else ""."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def key_is_valid(given: str, keys: list[str]) -> bool:
    """Constant time per key, and no early exit: timing does not tell which key nearly matched."""
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode(), key.encode())
    return ok


async def require_api_key(request: Request) -> None:
    """Bearer token check; open when no keys are configured."""
    keys: list[str] = request.app.state.settings.api_keys
    if keys and not key_is_valid(bearer_token(request.headers.get("authorization", "")), keys):
        raise UnauthorizedError("a valid API key is required: Authorization: Bearer <key>")


def served_models(request: Request) -> dict[str, ServedModel]:
    return request.app.state.models


def pick_model(models: dict[str, ServedModel], name: str | None, task: str | None) -> ServedModel:
    """The named model, or the first served model that does `task` (REST and WebSocket)."""
    if name:
        model = models.get(name)
        if model is None:
            raise NotFoundError(
                f"no model named {name!r}; served: {sorted(models)}", code="model_not_found"
            )
        if task and model.task != task:
            # A field whose value does not fit the endpoint: 422, like any bad field.
            raise BadFieldError(f"model {name!r} does {model.task}, not {task}", code="wrong_task")
        return model
    for model in models.values():
        if task is None or model.task == task:
            return model
    raise NotFoundError(f"no served model does {task}", code="model_not_found")


@dataclass
class Upload:
    """What a request carried: files by field name and the other fields as text."""

    files: dict[str, bytes]
    fields: dict[str, str]  # the last value of each field
    repeated: dict[str, list[str]] = field(default_factory=dict)  # every value, in order

    def values(self, *names: str) -> list[str]:
        """Every value sent under any of these names (a field may repeat)."""
        return [v for name in names for v in self.repeated.get(name, [])]

    def int_field(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.fields.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadFieldError(f"{name} must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise BadFieldError(f"{name} must be between {low} and {high}, got {value}")
        return value

    def bool_field(self, name: str, default: bool) -> bool:
        raw = self.fields.get(name)
        if raw is None or raw == "":
            return default
        value = raw.strip().lower()
        if value not in TRUE + FALSE:
            raise BadFieldError(f"{name} must be true or false, got {raw!r}")
        return value in TRUE


TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


async def read_upload(
    request: Request, file_fields: tuple[str, ...] = ("file",), text_files: tuple[str, ...] = ()
) -> Upload:
    """Multipart form (files under file_fields) or the raw body as the first file field;
    text_files are fields that may also come as a file part (curl -F text=@words.txt)."""
    fields: dict[str, str] = dict(request.query_params)
    repeated: dict[str, list[str]] = {}
    for key, text in request.query_params.multi_items():
        repeated.setdefault(key, []).append(text)
    files: dict[str, bytes] = {}
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=len(file_fields) + 2, max_fields=50)
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key in file_fields:
                    files[key] = await value.read()
                elif key in text_files:
                    fields[key] = _utf8(key, await value.read())
            else:
                fields[key] = value
                repeated.setdefault(key, []).append(value)
    elif ctype.startswith(RAW_TYPES) or (not ctype and file_fields == ("file",)):
        files[file_fields[0]] = await request.body()
    elif ctype.startswith("application/x-www-form-urlencoded"):
        raise BadFieldError(
            "send the audio as a multipart 'file' field or as the raw body", code="missing_file"
        )
    else:
        raise UnsupportedMediaError(
            f"unsupported Content-Type {ctype!r}: use multipart/form-data "
            "or the raw audio with an audio/* type"
        )
    limit = request.app.state.settings.max_upload_bytes
    for name in file_fields:
        if len(files.get(name, b"")) > limit:  # the body limit allows for multipart framing
            raise TooLargeError(f"the upload is larger than {limit} bytes")
        if name not in files:
            raise BadFieldError(
                f"the request has no audio in the {name!r} field", code="missing_file"
            )
    return Upload(files, fields, repeated)


def request_options(
    upload: Upload, settings: Settings, hotwords: list[str] | None = None, top_k: int = 5
) -> Options:
    """top_k and the decoding fields (docs/api.md); hotwords from `hotwords` or `hotwords[]`
    fields, repeated and/or comma-separated, unless given."""
    if hotwords is None:
        hotwords = upload.values("hotwords", "hotwords[]")
    return parse_options(upload.fields, settings, hotwords, top_k=top_k)


def _utf8(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a BOM is how some editors save UTF-8
    except UnicodeDecodeError:
        raise BadFieldError(f"the {name!r} file is not UTF-8 text") from None


async def decode(upload: Upload, field: str, model: ServedModel, settings: Settings) -> Audio:
    """The field's bytes -> mono float32 at the model's rate, decoded off the event loop."""
    data = upload.files[field]
    common: dict[str, Any] = dict(
        target_rate=model.sampling_rate,
        max_seconds=settings.max_audio_seconds,
        min_samples=model.min_samples,
    )
    encoding = upload.fields.get("encoding")
    if encoding:
        rate = upload.int_field("sample_rate", 0, 1, 10**9)
        if rate == 0:
            raise BadFieldError("raw PCM needs a sample_rate field", code="missing_sample_rate")
        channels = upload.int_field("channels", 1, 1, 1024)
        return await _in_thread(decode_pcm, data, rate, encoding, channels, **common)
    return await decode_isolated(data, decode_limits(settings), **common)


async def _in_thread(fn: Callable[..., Audio], *args: Any, **kwargs: Any) -> Audio:
    """Run a decoder off the loop; a decoder library that crashes on the client's bytes
    still means bytes we cannot read: 400, logged with the traceback so it can be fixed."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except (ServiceError, MemoryError):
        raise
    except Exception as exc:
        log.exception("the audio decoder crashed on an upload")
        raise AudioError("the audio could not be decoded", code="undecodable_audio") from exc


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await work, cancelling it if the client goes away first: the batcher then drops its
    queued windows before they cost a forward pass (uvicorn does not cancel handlers)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    raise ServiceError("the client closed the request", code="client_closed", status=499)


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects; call only once the body has been read."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def record_timings(request: Request, timed: Timed[Any]) -> None:
    """Echoed as x-queue-time / x-inference-time / x-decode-time by the middleware."""
    request.state.queue_time = timed.queue_time
    request.state.inference_time = timed.inference_time
    if isinstance(timed, TimedPrediction):  # x-decode-time: the transcript's decoding
        request.state.decode_time = timed.decode_time
