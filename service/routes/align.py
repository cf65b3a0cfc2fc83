"""Forced alignment: POST /v1/align, a clip and its transcript -> word and character times."""

from __future__ import annotations

from typing import Any, cast, get_args

from fastapi import APIRouter, Depends, Request

from service.align import EmptyTextError
from service.errors import BadFieldError, TooLargeError
from service.options import parse_language
from service.routes.deps import (
    SettingsDep,
    Upload,
    decode,
    pick_model,
    read_upload,
    record_timings,
    require_api_key,
    served_models,
    unless_disconnected,
)
from service.schemas import ErrorBody, Granularity, Options, Prediction

router = APIRouter(prefix="/v1", tags=["inference"], dependencies=[Depends(require_api_key)])

GRANULARITIES: tuple[str, ...] = get_args(Granularity)

ALIGN_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "text"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "text": {
                            "type": "string",
                            "description": "the transcript (a form field or a UTF-8 file part)",
                        },
                        "model": {"type": "string"},
                        "language": {"type": "string"},
                        "granularity": {
                            "type": "string",
                            "enum": list(GRANULARITIES),
                            "default": "word",
                        },
                        "star": {
                            "type": "boolean",
                            "default": False,
                            "description": "let word boundaries absorb speech the text lacks",
                        },
                        "sample_rate": {"type": "integer"},
                        "encoding": {"type": "string"},
                    },
                }
            },
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
        },
        "required": True,
    }
}


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ALIGN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("audio that cannot be used (empty_audio, audio_too_short, ...)"),
    404: _error("model_not_found"),
    413: _error("payload_too_large, audio_too_long, text_too_long"),
    415: _error("unsupported_media_type"),
    422: _error(
        "missing_text, empty_text, alignment_impossible (the text needs more frames than the "
        "audio has), wrong_task (not a CTC model), invalid_field, missing_file, "
        "unsupported_language"
    ),
}


@router.post(
    "/align",
    response_model=Prediction,
    response_model_exclude_none=True,
    openapi_extra=ALIGN_BODY,
    responses=ALIGN_ERRORS,
    summary="Forced alignment: the transcript's word and character times in the audio.",
    description="The best CTC path of the transcript through the clip's emissions (the same "
    "batched forward pass as transcription), in seconds from the start of the input. A word "
    "ends where its path ends; it starts at its speech onset: the path's start moved back over "
    "the frames just before it where the blank wins but the non-blank probability exceeds "
    "e^-10 (at most 10 frames, never into the previous word), because CTC models spike a "
    "word's first letter late. `score`: the mean log-probability of the word's frames on the "
    "path.",
)
async def align(request: Request, settings: SettingsDep) -> Prediction:
    """Forced alignment: the transcript's word and character times in the audio."""
    upload = await read_upload(request, text_files=("text",))
    text = _text(upload, settings.max_align_text_chars)
    options = Options(
        granularity=_granularity(upload),
        star=upload.bool_field("star", False),
        language=parse_language(upload.fields.get("language")),
    )
    name = upload.fields.get("model")
    # A named model is checked below with a message about alignment; unnamed, the first CTC one.
    model = pick_model(served_models(request), name, None if name else "transcribe")
    model.check_aligns()
    audio = await decode(upload, "file", model, settings)
    work = model.align(audio.samples, audio.duration, text, options)
    timed = await unless_disconnected(request, work)
    record_timings(request, timed)
    return timed.result


def _text(upload: Upload, limit: int) -> str:
    text = upload.fields.get("text")
    if text is None:
        raise BadFieldError(
            "the request has no 'text' field: the transcript to align", code="missing_text"
        )
    if len(text) > limit:
        raise TooLargeError(
            f"the text has {len(text)} characters, more than {limit}", code="text_too_long"
        )
    if not text.strip():
        raise EmptyTextError("the text is empty")
    return text


def _granularity(upload: Upload) -> Granularity:
    value = upload.fields.get("granularity") or "word"
    if value not in GRANULARITIES:
        raise BadFieldError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {value!r}")
    return cast(Granularity, value)
