"""Every error the service reports: a machine-readable code, an HTTP status, a message."""

from __future__ import annotations


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

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


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
