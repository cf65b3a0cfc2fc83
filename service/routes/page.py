"""GET /: the browser page (microphone streaming; a file's words on its waveform); its scripts
under /static."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "static"
# The files the page needs, by name; nothing else under static/ is served.
FILES = {
    "app.js": "text/javascript",
    "file.js": "text/javascript",
    "pcm-worklet.js": "text/javascript",
    "style.css": "text/css",
}


@router.get("/")
async def index() -> FileResponse:
    """The page: live microphone transcription; a file transcribed or aligned, on its waveform."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    if name not in FILES:
        raise HTTPException(404, f"no static file {name!r}")
    # no-cache: the page must not run an old script against a newer server.
    return FileResponse(
        STATIC / name, media_type=FILES[name], headers={"Cache-Control": "no-cache"}
    )
