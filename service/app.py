"""create_app(settings): the FastAPI app, its lifespan, error handlers and routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service import __version__, sandbox
from service.build import build_models
from service.errors import ServiceError
from service.lifecycle import Lifecycle
from service.middleware import RequestMiddleware
from service.routes import align, health, openai, page, predict, stream
from service.settings import Settings
from service.streaming import StreamStats

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        models = await asyncio.to_thread(build_models, settings)
        app.state.models = models
        for model in models.values():
            model.start()
        await asyncio.to_thread(sandbox.pool(sandbox.decode_limits(settings)).start)
        lifecycle.set_ready(True)
        try:
            yield
        finally:
            lifecycle.set_ready(False)
            # After a SIGTERM drain, only what is left of drain_timeout, not a second one.
            timeout = lifecycle.drain_time_left(settings.drain_timeout)
            await asyncio.gather(*(m.stop(timeout) for m in models.values()))
            sandbox.close_pool()

    app = FastAPI(
        title="Wav2Vec2 inference service",
        version=__version__,
        lifespan=lifespan,
        description="Speech recognition with word times, forced alignment, audio "
        "classification, frame classification and speaker embeddings for Hugging Face Wav2Vec2 "
        "checkpoints; a browser page at / shows a file's words on its waveform.",
    )
    app.state.settings = settings
    app.state.lifecycle = lifecycle
    app.state.models = {}
    app.state.streams = StreamStats()
    _add_error_handlers(app)
    for module in (health, predict, align, openai, stream, page):
        app.include_router(module.router)
    app.add_middleware(
        RequestMiddleware,
        lifecycle=lifecycle,
        max_upload=settings.max_upload_bytes,
        body_timeout=settings.body_timeout,
    )
    if settings.cors_origins:  # outermost, so the middleware's own 413/503 answers carry it too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[
                "x-queue-time",
                "x-inference-time",
                "x-decode-time",
                "x-total-time",
                "retry-after",
            ],
        )
    return app


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return error_response(exc)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client hung up mid-upload: its doing, not a server error (counted as 499).
        return error_response(
            ServiceError("the client closed the request", code="client_closed", status=499)
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        return error_response(ServiceError(problems, code="invalid_field", status=422))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette raises these for routing and for multipart it cannot parse (400).
        codes = {
            400: "invalid_request",
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
        }
        code = codes.get(exc.status_code, "http_error")
        return error_response(ServiceError(str(exc.detail), code=code, status=exc.status_code))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(ServiceError("internal server error"))
