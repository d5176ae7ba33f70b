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


class NotReadyError(VoxError):
    status_code = 503
    error_type = "server_error"
    code = "not_ready"


class EngineError(VoxError):
    """An engine failed while synthesizing; the request fails, the server stays up."""

    status_code = 500
    error_type = "server_error"
    code = "engine_error"


class ConfigError(VoxError):
    """Settings or voice files that cannot be used; raised at start-up."""

    code = "config_error"
