"""The one error tree. Each class carries its HTTP status and OpenAI error `type`/`code`;
inner code raises them where a problem is detected and `api/app.py` renders them once."""

from __future__ import annotations


class VoxError(Exception):
    """Base of every error voxserve reports to a client."""

    status_code = 500
    error_type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """HTTP headers the response carries besides the body."""
        return {}

    def to_dict(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class InvalidRequestError(VoxError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_value"


class NotFoundError(VoxError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class VoiceNotFoundError(NotFoundError):
    code = "voice_not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class InputTooLongError(VoxError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "input_too_long"


class PayloadTooLargeError(VoxError):
    """An upload or fetched file beyond the configured byte or duration limit."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "file_too_large"


class NotReadyError(VoxError):
    status_code = 503
    error_type = "server_error"
    code = "not_ready"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class EngineError(VoxError):
    """An engine failed while synthesizing; the request fails, the server stays up."""

    status_code = 500
    error_type = "server_error"
    code = "engine_error"


class ConfigError(VoxError):
    """Settings or voice files that cannot be used; raised at start-up."""

    code = "config_error"


class TooManyRequestsError(VoxError):
    """429: come back later; `retry_after_s` says when."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class QueueFullError(TooManyRequestsError):
    """Admission control refused the request; `retry_after_s` estimates when the queue has room."""

    code = "queue_full"


class DeadlineExceededError(VoxError):
    status_code = 504
    error_type = "server_error"
    code = "deadline_exceeded"


class ClientDisconnectedError(VoxError):
    """The client went away; nothing is sent, the request's queued work is dropped."""

    status_code = 499
    error_type = "invalid_request_error"
    code = "client_disconnected"


class ConflictError(VoxError):
    """The server is already doing the one thing of this kind it does at a time (a profile, a benchmark)."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class AuthenticationError(VoxError):
    """No API key, or one the server does not know, where keys are required."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="voxserve"'}


class PermissionDeniedError(VoxError):
    """A known key without the scope a route needs, or a browser request from an origin that is not allowed."""

    status_code = 403
    error_type = "invalid_request_error"
    code = "insufficient_scope"


class MisdirectedRequestError(VoxError):
    """A `Host` header this server does not answer to (DNS rebinding looks like this)."""

    status_code = 421
    error_type = "invalid_request_error"
    code = "invalid_host"


class RateLimitError(TooManyRequestsError):
    """A key passed one of its limits; `headers` carry `Retry-After` and OpenAI's `x-ratelimit-*` counts."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: int, limit_headers: dict[str, str]) -> None:
        super().__init__(message, retry_after_s)
        self.limit_headers = limit_headers

    def headers(self) -> dict[str, str]:
        return {**self.limit_headers, **super().headers()}
