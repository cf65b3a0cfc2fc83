"""OpenAI-compatible POST /v1/audio/transcriptions, so the official `openai` client works.

Field by field (OpenAI's names, the `openai` package's TranscriptionVerbose types):

- `model`: a served model's name selects it. OpenAI's own model names (`whisper-*`,
  `gpt-*transcribe*`), as code written for OpenAI sends, and an empty value mean the first
  served transcription model; any other unknown name is a 404, so a typo in a served name is
  not silently answered by another model. The model used is echoed in `x-model`.
- `response_format`: json (default) `{"text"}`; text (the transcript and a newline, as OpenAI
  sends it); verbose_json; srt; vtt. Anything else (diarized_json too) is a 422.
- `timestamp_granularities[]` (repeatable; `timestamp_granularities` too): word and/or segment,
  default segment; used by verbose_json only, as OpenAI does.
- `prompt`: its words become hotwords of the beam search (Whisper reads a prompt as likely
  vocabulary, names and spellings; a CTC beam can only lift words): words of letters, digits
  and apostrophes, first occurrence kept, at most `max_hotwords` and none longer than
  `max_hotword_chars` (the rest of a long prompt is dropped, not refused). A prompt selects
  the beam decoder even on a model without an LM. Our own decoding fields (`decoder`,
  `beam_width`, `alpha`, `beta`, `hotwords`, `hotword_weight`) are accepted too, checked as on
  /v1/transcribe.
- `language`: on a model with language adapters (MMS), picks the adapter as on /v1/transcribe:
  ISO 639-1 (`en`) or 639-3 (`eng`), or `auto` where a language identifier is configured; the
  language used is verbose_json's `language`. A model of one language ignores it (code written
  for OpenAI sends it) and echoes it ("unknown" without it).
- `temperature`, `include[]`, `chunking_strategy`: accepted and ignored: CTC has no sampling.
  `temperature` must still be a number in [0, 1]. `stream=true` is a 422 (no SSE here; use the
  WebSocket /v1/stream).

Segments (verbose_json, srt, vtt) are runs of words split at pauses over 0.5 s, every 12 words
or 7 s. Their Whisper-only fields are filled honestly: `tokens` [] (CTC characters are no
Whisper tokens), `seek` 0 (no 30-s seek windows), `temperature` 0 (greedy), `avg_logprob` 0
and `no_speech_prob` 0 (not computed; 0 reads as "keep" to Whisper's thresholds), and
`compression_ratio` Whisper's own text / zlib(text) ratio.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from service.errors import BadFieldError, NotFoundError
from service.openapi_docs import INFERENCE_ERRORS, error_responses
from service.options import split_hotwords
from service.routes.deps import (
    SettingsDep,
    decode,
    pick_model,
    read_upload,
    record_timings,
    request_options,
    require_api_key,
    served_models,
    unless_disconnected,
)
from service.runtime import ServedModel
from service.schemas import Prediction, Word
from service.settings import Settings

router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    dependencies=[Depends(require_api_key)],
    responses=error_responses(*INFERENCE_ERRORS),
)

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
GRANULARITIES = ("word", "segment")
OPENAI_MODEL = re.compile(r"^(whisper-.*|gpt-.*transcribe.*)$")
SEGMENT_PAUSE = 0.5  # seconds of silence between words that start a new segment
SEGMENT_WORDS = 12
SEGMENT_SECONDS = 7.0

OPENAPI_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string"},
                        "response_format": {"type": "string", "enum": list(FORMATS)},
                        "timestamp_granularities[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": list(GRANULARITIES)},
                        },
                        "language": {"type": "string"},
                        "prompt": {"type": "string"},
                        "temperature": {"type": "number"},
                    },
                }
            }
        },
        "required": True,
    }
}


def segments(words: Sequence[Word], text: str, duration: float) -> list[dict[str, Any]]:
    """Words grouped at pauses, OpenAI's TranscriptionSegment fields each."""
    groups: list[list[Word]] = []
    for word in words:
        current = groups[-1] if groups else None
        if (
            current is None
            or word.start - current[-1].end > SEGMENT_PAUSE
            or len(current) >= SEGMENT_WORDS
            or word.end - current[0].start > SEGMENT_SECONDS
        ):
            groups.append([word])
        else:
            current.append(word)
    spans = [(g[0].start, g[-1].end, " ".join(w.word for w in g)) for g in groups]
    if not spans and text.strip():  # text without word times: one segment for the clip
        spans = [(0.0, duration, text.strip())]
    return [
        {
            "id": i,
            "seek": 0,
            "start": start,
            "end": end,
            "text": seg_text,
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": 0.0,
            "compression_ratio": _compression_ratio(seg_text),
            "no_speech_prob": 0.0,
        }
        for i, (start, end, seg_text) in enumerate(spans)
    ]


def _compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS,mmm (srt) or HH:MM:SS.mmm (vtt)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def subtitles(prediction: Prediction, kind: str) -> str:
    """The segments as SubRip (srt) or WebVTT (vtt) cues."""
    sep = "," if kind == "srt" else "."
    cues = []
    for seg in segments(prediction.words or [], prediction.text or "", prediction.duration):
        times = f"{timestamp(seg['start'], sep)} --> {timestamp(seg['end'], sep)}"
        number = f"{seg['id'] + 1}\n" if kind == "srt" else ""
        cues.append(f"{number}{times}\n{seg['text']}\n\n")
    return ("WEBVTT\n\n" if kind == "vtt" else "") + "".join(cues)


def render(
    prediction: Prediction,
    response_format: str,
    granularities: Sequence[str] = ("segment",),
    language: str | None = None,
) -> Response:
    """A transcription Prediction in one of OpenAI's response formats."""
    text = prediction.text or ""
    if response_format == "json":
        return JSONResponse({"text": text, "usage": _usage(prediction)})
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    if response_format in ("srt", "vtt"):
        media = "text/vtt" if response_format == "vtt" else "text/plain"
        return PlainTextResponse(subtitles(prediction, response_format), media_type=media)
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language or "unknown",
        "duration": prediction.duration,
        "text": text,
    }
    words = prediction.words or []
    if "word" in granularities:
        body["words"] = [w.model_dump() for w in words]
    if "segment" in granularities:
        body["segments"] = segments(words, text, prediction.duration)
    body["usage"] = _usage(prediction)
    return JSONResponse(body)


def _usage(prediction: Prediction) -> dict[str, Any]:
    return {"type": "duration", "seconds": prediction.duration}


def _model(models: dict[str, ServedModel], name: str) -> ServedModel:
    if name and (name in models or not OPENAI_MODEL.match(name)):
        return pick_model(models, name, "transcribe")
    try:
        return pick_model(models, None, "transcribe")
    except NotFoundError:
        raise NotFoundError(
            f"no served model transcribes (asked for {name!r})", code="model_not_found"
        ) from None


def _options(fields: dict[str, str], granularities: list[str]) -> tuple[str, list[str]]:
    response_format = fields.get("response_format") or "json"
    if response_format not in FORMATS:
        raise BadFieldError(f"response_format must be one of {', '.join(FORMATS)}")
    bad = sorted(set(granularities) - set(GRANULARITIES))
    if bad:
        raise BadFieldError(f"timestamp_granularities[] takes word and segment, got {bad}")
    if fields.get("stream", "").lower() == "true":
        raise BadFieldError("stream is not supported here; use the WebSocket /v1/stream")
    try:
        temperature = float(fields.get("temperature") or 0)
    except ValueError:
        temperature = -1.0
    if not 0 <= temperature <= 1:
        raise BadFieldError("temperature must be a number between 0 and 1")
    return response_format, granularities or ["segment"]


PROMPT_WORD = re.compile(r"[\w']+")


def prompt_hotwords(prompt: str, settings: Settings, room: int) -> list[str]:
    """A prompt's distinct words that fit the hotword limits, at most `room` of them."""
    words = [w for w in PROMPT_WORD.findall(prompt) if len(w) <= settings.max_hotword_chars]
    return list(dict.fromkeys(words))[: max(0, room)]


@router.post("/audio/transcriptions", openapi_extra=OPENAPI_BODY, response_model=None)
async def transcriptions(request: Request, settings: SettingsDep) -> Response:
    """OpenAI's audio transcription API: json, text, verbose_json, srt or vtt."""
    upload = await read_upload(request)
    form = await request.form()  # cached by read_upload; it keeps one value per field name
    keys = ("timestamp_granularities[]", "timestamp_granularities")
    given = [str(g) for k in keys for g in request.query_params.getlist(k) + form.getlist(k)]
    response_format, granularities = _options(upload.fields, given)
    hotwords = list(split_hotwords(upload.values("hotwords", "hotwords[]")))
    room = settings.max_hotwords - len(hotwords)
    hotwords += prompt_hotwords(upload.fields.get("prompt") or "", settings, room)
    options = request_options(upload, settings, hotwords)
    model = _model(served_models(request), upload.fields.get("model", ""))
    if not model.languages:  # one language: OpenAI's field is no choice here
        options = options.model_copy(update={"language": None})
    audio = await decode(upload, "file", model, settings)
    # Like the other routes: a client that hangs up frees its windows before they compute.
    work = model.predict(audio.samples, audio.duration, options)
    timed = await unless_disconnected(request, work)
    record_timings(request, timed)
    language = timed.result.language or upload.fields.get("language")
    response = render(timed.result, response_format, granularities, language)
    response.headers["x-model"] = model.name
    return response
