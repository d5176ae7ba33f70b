"""Bad input gets OpenAI-shaped 4xx errors and leaves the server healthy."""

from __future__ import annotations

import httpx
import pytest

GOOD = {"model": "tts-1", "input": "Still here.", "voice": "alloy", "response_format": "wav"}


def assert_openai_error(response: httpx.Response, status: int, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["message"]
    assert "Traceback" not in response.text
    assert "pydantic" not in response.text


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({**GOOD, "input": ""}, 400, "input"),
        ({**GOOD, "input": "   "}, 400, "input"),
        ({**GOOD, "input": "a" * 4097}, 413, "input"),
        ({**GOOD, "voice": "no-such-voice"}, 404, "voice"),
        ({**GOOD, "model": "no-such-model"}, 404, "model"),
        ({**GOOD, "response_format": "ogg"}, 400, "response_format"),
        ({**GOOD, "speed": 0.1}, 400, "speed"),
        ({**GOOD, "speed": 4.5}, 400, "speed"),
        ({**GOOD, "speed": "fast"}, 400, "speed"),
        ({**GOOD, "input": 123}, 400, "input"),
        ({**GOOD, "voice": ["alloy"]}, 400, "voice"),
        ({**GOOD, "stream_format": "websocket"}, 400, "stream_format"),
        ({"model": "tts-1", "voice": "alloy"}, 400, "input"),
        ({**GOOD, "model": "espeak", "voice": "en_US-joe-medium"}, 400, "model"),
    ],
)
def test_invalid_bodies_get_openai_errors(http: httpx.Client, body: dict, status: int, param: str | None) -> None:
    assert_openai_error(http.post("/v1/audio/speech", json=body), status, param)
    assert http.post("/v1/audio/speech", json=GOOD).status_code == 200


@pytest.mark.parametrize(
    ("content", "content_type"),
    [("{not json", "application/json"), ("hello there", "text/plain"), ("[1, 2]", "application/json"), ("", "")],
)
def test_unparseable_bodies_get_openai_errors(http: httpx.Client, content: str, content_type: str) -> None:
    response = http.post("/v1/audio/speech", content=content, headers={"content-type": content_type})
    assert_openai_error(response, 400, None)
    assert http.get("/health").json() == {"status": "ok"}
    assert http.post("/v1/audio/speech", json=GOOD).status_code == 200


def test_unknown_route_is_an_openai_404(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/nothing-here"), 404, None)
