"""GET /: the browser page (microphone streaming; a file's words on its waveform); its scripts
under /static."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

router = APIRouter(tags=["page"])
STATIC = Path(__file__).resolve().parent.parent / "static"
# The files the page needs, by name; nothing else under static/ is served.
FILES = {
    "app.js": "text/javascript",
    "file.js": "text/javascript",
    "pcm-worklet.js": "text/javascript",
    "style.css": "text/css",
}


PAGE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The HTML page. Live microphone transcription over WS /v1/stream; a "
        "chosen file's waveform (decoded and drawn in the browser) with each word's span from "
        "POST /v1/transcribe, or from POST /v1/align with a pasted transcript, over it; choosing "
        "a word plays its span. No script or style from outside the service.",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
}


@router.get("/", response_class=FileResponse, responses=PAGE_DOC, summary="The browser page")
async def index() -> FileResponse:
    """The page: live microphone transcription; a file transcribed or aligned, on its waveform."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    if name not in FILES:
        raise HTTPException(404, f"no static file {name!r}")
    # no-cache: the page must not run an old script against a newer server.
    return FileResponse(
        STATIC / name, media_type=FILES[name], headers={"Cache-Control": "no-cache"}
    )
