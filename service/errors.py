"""Every error the service reports: a machine-readable code, an HTTP status, a message.

The one builder of the error body and its headers (docs/api.md, "Errors"): REST handlers, the
middleware's early refusals, the CLI's error lines and the WebSocket `error` message all use
`ServiceError.body()` / `.headers()`.
"""

from __future__ import annotations

# Statuses that tell the client to come back: they always carry Retry-After.
RETRY_STATUSES = (429, 503)


def retry_after_headers(seconds: float | None) -> dict[str, str]:
    """`Retry-After` in whole seconds, at least 1."""
    return {"Retry-After": str(max(1, round(seconds or 1)))}


class ServiceError(Exception):
    """An error with a stable code; rendered as {"error": {"code", "message"}}."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def body(self) -> dict[str, dict[str, str]]:
        """The JSON error body."""
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict[str, str]:
        """Retry-After for overload and unavailability, or wherever a wait was estimated;
        WWW-Authenticate on 401 (RFC 9110 11.6.1: a 401 names the scheme it wants)."""
        if self.status == 401:
            return {"WWW-Authenticate": 'Bearer realm="w2v"'}
        if self.retry_after is not None or self.status in RETRY_STATUSES:
            return retry_after_headers(self.retry_after)
        return {}


class ModelError(ServiceError):
    """A checkpoint that cannot be loaded or is not supported (names the field or file)."""

    code = "model_error"


class AudioError(ServiceError):
    """Audio the client sent that cannot be used (unreadable, empty, too short, non-finite)."""

    status = 400
    code = "invalid_audio"


class UnsupportedMediaError(AudioError):
    status = 415
    code = "unsupported_media_type"


class TooLargeError(ServiceError):
    status = 413
    code = "payload_too_large"


class BadFieldError(ServiceError):
    status = 422
    code = "invalid_field"


class NotFoundError(ServiceError):
    status = 404
    code = "not_found"


class UnauthorizedError(ServiceError):
    status = 401
    code = "unauthorized"


class OverloadedError(ServiceError):
    status = 429
    code = "overloaded"


class UnavailableError(ServiceError):
    status = 503
    code = "unavailable"


class TimeoutError_(ServiceError):
    status = 504
    code = "timeout"


class InferenceError(ServiceError):
    status = 500
    code = "inference_failed"
