"""REST inference: transcribe, classify, embed, frames, verify, and the model list."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Depends, Request

from service.batcher import Timed
from service.openapi_docs import INFERENCE_ERRORS, error_responses
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
from service.schemas import ModelCard, Prediction, VerifyResult

router = APIRouter(
    prefix="/v1",
    tags=["inference"],
    dependencies=[Depends(require_api_key)],
    responses=error_responses(*INFERENCE_ERRORS),
)

AUDIO_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string"},
                        "top_k": {"type": "integer"},
                        "language": {"type": "string"},
                        "decoder": {"type": "string", "enum": ["greedy", "beam"]},
                        "beam_width": {"type": "integer"},
                        "alpha": {"type": "number"},
                        "beta": {"type": "number"},
                        "hotwords": {"type": "array", "items": {"type": "string"}},
                        "hotword_weight": {"type": "number"},
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


async def _predict(request: Request, settings: SettingsDep, task: str) -> Prediction:
    upload = await read_upload(request)
    model = pick_model(served_models(request), upload.fields.get("model"), task)
    top_k = upload.int_field("top_k", 5, 1, 10_000)
    options = request_options(upload, settings, top_k=top_k)
    audio = await decode(upload, "file", model, settings)
    work = model.predict(audio.samples, audio.duration, options)
    timed = await unless_disconnected(request, work)
    record_timings(request, timed)
    return timed.result


def _route(task: str, summary: str):  # one endpoint per task, same body
    async def endpoint(request: Request, settings: SettingsDep) -> Prediction:
        return await _predict(request, settings, task)

    endpoint.__doc__ = summary
    return endpoint


for _task, _path, _summary in (
    ("transcribe", "/transcribe", "Speech to text with word start and end times (CTC)."),
    ("classify", "/classify", "Audio classification: labels with softmax scores, best first."),
    ("embed", "/embed", "A speaker (XVector) or mean hidden-state embedding of the clip."),
    ("frames", "/frames", "Frame classification: labelled segments where a label is active."),
):
    router.add_api_route(
        _path,
        _route(_task, _summary),
        methods=["POST"],
        response_model=Prediction,
        response_model_exclude_none=True,
        openapi_extra=AUDIO_BODY,
        summary=_summary,
        name=_task,
    )


@router.post("/verify", response_model=VerifyResult)
async def verify(request: Request, settings: SettingsDep) -> VerifyResult:
    """Speaker verification: cosine similarity of the embeddings of file1 and file2."""
    upload = await read_upload(request, ("file1", "file2"))
    model = pick_model(served_models(request), upload.fields.get("model"), "embed")
    a = await decode(upload, "file1", model, settings)
    b = await decode(upload, "file2", model, settings)
    # Both clips queued at once, so they can share a batch.
    both = asyncio.gather(*(model.predict(x.samples, x.duration) for x in (a, b)))
    ta, tb = await unless_disconnected(request, both)
    queue, inference = max(ta.queue_time, tb.queue_time), max(ta.inference_time, tb.inference_time)
    record_timings(request, Timed(None, queue, inference))
    ea, eb = np.asarray(ta.result.embedding), np.asarray(tb.result.embedding)
    score = float(ea @ eb / max(np.linalg.norm(ea) * np.linalg.norm(eb), 1e-12))
    threshold = settings.verify_threshold
    if threshold is None:
        threshold = model.verify_threshold
    return VerifyResult(score=score, same_speaker=score >= threshold, threshold=threshold)


@router.get("/models")
async def models(request: Request) -> dict[str, object]:
    """The served models with their task, labels and sampling rate."""
    cards: list[ModelCard] = [m.card() for m in served_models(request).values()]
    return {"object": "list", "data": [c.model_dump(exclude_none=True) for c in cards]}
