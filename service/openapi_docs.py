"""OpenAPI for the error answers: every status an operation can give, with the error schema.

Routers pass `responses=error_responses(...)`, so generated clients and schema-driven fuzzers
see the 4xx/5xx answers the code gives (issue 20: only 200 was documented).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error: {"error": {"code": "<machine-readable>", "message": "<for a person>"}}."""

    error: ErrorDetail


_WHY = {
    400: "Audio that cannot be used: undecodable, empty, too short, non-finite, bad rate",
    401: "Missing or wrong API key (the answer carries WWW-Authenticate: Bearer)",
    404: "No such model",
    408: "The request body stalled for longer than the body timeout",
    413: "Upload or audio over the configured size or duration limit",
    415: "Not audio in a known format, or an unsupported Content-Type",
    422: "A field with a bad value",
    429: "Overloaded: the expected wait is over the maximum queue time (see Retry-After)",
    500: "A fault of the server itself",
    503: "Not ready, draining or shutting down (see Retry-After)",
    504: "The request ran past the request timeout",
}
# What every inference operation can answer (middleware, reading, decoding, batching).
INFERENCE_ERRORS = (400, 401, 404, 408, 413, 415, 422, 429, 500, 503, 504)
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: each status with its reason and ErrorBody."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        doc: dict[str, Any] = {"model": ErrorBody, "description": _WHY[status]}
        if status in (429, 503):
            doc["headers"] = RETRY_AFTER
        if status == 401:
            doc["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[status] = doc
    return out


def text_response(description: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a 200 that is text/plain (Prometheus metrics)."""
    return {
        200: {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}
    }
