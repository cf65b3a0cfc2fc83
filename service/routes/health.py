"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.errors import retry_after_headers
from service.metrics import REGISTRY
from service.openapi_docs import text_response

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process lives."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Starting or draining"}})
async def readyz(request: Request, response: Response) -> dict[str, str]:
    """200 once models are loaded and warm; 503 before that and while draining."""
    lifecycle = request.app.state.lifecycle
    if lifecycle.accepting:
        return {"status": "ready"}
    response.status_code = 503
    response.headers.update(retry_after_headers(1))
    return {"status": "draining" if lifecycle.draining else "starting"}


@router.get(
    "/metrics", response_class=PlainTextResponse, responses=text_response("Prometheus text format")
)
async def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
