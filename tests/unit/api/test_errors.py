from __future__ import annotations

import json
import logging

import pytest

from voxserve.api.errors import error_response
from voxserve.errors import DeadlineExceededError, EngineError, InvalidRequestError


def body(error: Exception, request_id: str = "req-1") -> dict[str, object]:
    response = error_response(error, request_id)  # type: ignore[arg-type]
    return json.loads(response.body)["error"]


def test_internal_failures_show_a_fixed_message_and_log_the_details(caplog: pytest.LogCaptureFixture) -> None:
    error = EngineError("engine piper failed: [ONNXRuntimeError] /opt/models/secret.onnx: bad input")
    with caplog.at_level(logging.ERROR, logger="voxserve.api.errors"):
        shown = body(error, "abc123")
    assert "ONNXRuntimeError" not in str(shown)
    assert "secret.onnx" not in str(shown)
    assert "abc123" in str(shown["message"])
    assert shown["code"] == "engine_error"
    assert "abc123" in caplog.text
    assert "secret.onnx" in caplog.text


def test_client_errors_keep_their_message_and_carry_the_request_id_header() -> None:
    response = error_response(InvalidRequestError("speed: too fast", param="speed"), "rid")
    assert json.loads(response.body)["error"]["message"] == "speed: too fast"
    assert response.headers["x-request-id"] == "rid"
    assert body(DeadlineExceededError("request passed its deadline"))["message"] == "request passed its deadline"
