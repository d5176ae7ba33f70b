"""Streamed responses that fail after they started, in-process: the body ends cleanly after what was sent (SSE
with an error event last), the client sees no internals, and telemetry counts the request as the error it failed
with."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from tests.fakes import FAKE_SERVER, FakeEngine
from tests.unit.api.inprocess import running_app
from voxserve.api.errors import install_error_handlers
from voxserve.api.middleware import TelemetryMiddleware
from voxserve.api.state import AppState
from voxserve.api.streaming import ClosingStreamingResponse, streaming_response
from voxserve.errors import DeadlineExceededError
from voxserve.obs.metrics import Metrics
from voxserve.obs.telemetry import Telemetry, TelemetryOptions
from voxserve.settings import Settings

SPEECH = "/v1/audio/speech"
FAILS_MIDWAY = "Hello there. fail"  # segments "Hello there." (12 samples of the fake voice), then "fail"
FIRST_AUDIO = 12 * 2  # bytes of s16 PCM the first segment makes (less the limiter's lookahead, held back)


class Recorder:
    """Keeps every ASGI message the app sends, to see how its response ended."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.messages: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def recorded(message: Message) -> None:
            self.messages.append(message)
            await send(message)

        await self.app(scope, receive, recorded)


@dataclass
class Outcome:
    response: httpx.Response
    messages: list[Message]
    telemetry: Telemetry

    @property
    def metrics(self) -> Metrics:
        return self.telemetry.metrics

    def ended_cleanly(self) -> bool:
        last = self.messages[-1]
        return last["type"] == "http.response.body" and not last.get("more_body", False)

    def requests(self, status: str, response_format: str) -> float:
        labels = {"route": SPEECH, "status": status, "engine": "fake", "format": response_format}
        return self.metrics.registry.get_sample_value("voxserve_requests_total", labels) or 0.0

    def truncated(self, code: str, route: str = SPEECH) -> float:
        labels = {"route": route, "code": code}
        return self.metrics.registry.get_sample_value("voxserve_truncated_responses_total", labels) or 0.0


async def call(app: FastAPI, telemetry: Telemetry, path: str, body: dict[str, object]) -> Outcome:
    recorder = Recorder(app)
    transport = httpx.ASGITransport(app=recorder)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.post(path, json=body)
    return Outcome(response, recorder.messages, telemetry)


def speak(tmp_path: Path, engine: FakeEngine, **body: object) -> Outcome:
    """One speech request to a whole app in-process around `engine`."""
    # No crossfade: the fake voice's segments are a few samples long, and the first must reach the client before
    # the second fails.
    settings = Settings(**FAKE_SERVER, data_dir=tmp_path, crossfade_ms=0)  # type: ignore[arg-type]

    async def run() -> Outcome:
        async with running_app(settings, [engine]) as (app, services):
            return await call(app, services.telemetry, SPEECH, {"voice": "fake", "response_format": "wav", **body})

    return asyncio.run(run())


def sse_events(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line[len("data: ") :]) for line in response.text.splitlines() if line.startswith("data: ")]


def late_deadline(texts: list[str]) -> None:
    if texts == ["fail"]:
        raise DeadlineExceededError("request passed its deadline")


def test_an_audio_stream_failing_midway_ends_cleanly_after_the_audio_so_far(tmp_path: Path) -> None:
    outcome = speak(tmp_path, FakeEngine(), input=FAILS_MIDWAY)
    assert outcome.response.status_code == 200
    assert outcome.ended_cleanly()  # a chunked terminator, not a reset connection
    body = outcome.response.content
    assert body[:4] == b"RIFF"
    assert 44 < len(body) <= 44 + FIRST_AUDIO  # the header and the first segment's audio, nothing after
    assert outcome.requests("500", "wav") == 1
    assert outcome.requests("200", "wav") == 0
    assert outcome.truncated("engine_error") == 1
    assert outcome.telemetry.window.stats().errors == 1


def test_an_sse_stream_failing_midway_ends_with_an_error_event_and_no_internals(tmp_path: Path) -> None:
    outcome = speak(tmp_path, FakeEngine(), input=FAILS_MIDWAY, stream_format="sse")
    assert outcome.response.status_code == 200
    assert outcome.ended_cleanly()
    events = sse_events(outcome.response)
    assert [event["type"] for event in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    audio = b"".join(base64.b64decode(str(event["audio"])) for event in events[:-1])
    assert 44 < len(audio) <= 44 + FIRST_AUDIO
    request_id = outcome.response.headers["x-request-id"]
    assert events[-1] == {
        "type": "error",
        "error": {
            "message": f"the server failed on this request; quote request id {request_id}",
            "type": "server_error",
            "param": None,
            "code": "engine_error",
        },
    }
    assert "boom" not in outcome.response.text
    assert outcome.requests("500", "wav") == 1
    assert outcome.truncated("engine_error") == 1


def test_a_failure_that_is_not_internal_reaches_the_client_as_itself(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.on_run = late_deadline
    outcome = speak(tmp_path, engine, input=FAILS_MIDWAY, stream_format="sse")
    error = sse_events(outcome.response)[-1]["error"]
    assert error == {
        "message": f"request {outcome.response.headers['x-request-id']} passed its deadline",
        "type": "server_error",
        "param": None,
        "code": "deadline_exceeded",
    }
    assert outcome.requests("504", "wav") == 1
    assert outcome.truncated("deadline_exceeded") == 1


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
def test_a_failure_before_the_first_audio_is_a_plain_error_response(tmp_path: Path, stream_format: str) -> None:
    outcome = speak(tmp_path, FakeEngine(), input="fail", stream_format=stream_format)
    assert outcome.response.status_code == 500
    assert outcome.response.json()["error"]["code"] == "engine_error"
    assert outcome.requests("500", "wav") == 1
    assert outcome.truncated("engine_error") == 0


def test_an_unexpected_exception_midway_is_logged_and_shown_to_no_one(caplog: pytest.LogCaptureFixture) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"first"
        raise RuntimeError("secret at /opt/models/x.onnx")

    telemetry = Telemetry(TelemetryOptions())
    state = AppState()
    state.services = SimpleNamespace(telemetry=telemetry)  # type: ignore[assignment]
    app = FastAPI()

    @app.post("/pieces")
    async def stream(request: Request) -> Response:
        return await streaming_response(request, pieces(), "audio/wav", dict)

    install_error_handlers(app)
    app.add_middleware(TelemetryMiddleware, state=state)
    with caplog.at_level(logging.WARNING, logger="voxserve.api.streaming"):
        outcome = asyncio.run(call(app, telemetry, "/pieces", {}))
    assert (outcome.response.status_code, outcome.response.content) == (200, b"first")
    assert outcome.ended_cleanly()
    assert outcome.truncated("internal_error", route="/pieces") == 1
    assert "secret at /opt/models/x.onnx" in caplog.text
    telemetry.stop()


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
def test_a_body_cut_short_by_a_departing_client_is_closed_at_once(spec_version: str) -> None:
    """Not left to the garbage collector: the body's cleanup (queue room, queued segments, encoder) runs before
    the response returns, even while something (here the test; in a server, a traceback cycle) holds it."""
    cleaned_up = asyncio.Event()
    sent: list[Message] = []

    async def body() -> AsyncIterator[bytes]:
        try:
            for _ in range(1000):
                yield b"audio"
                await asyncio.sleep(0)
        finally:
            cleaned_up.set()

    async def scenario() -> None:
        iterator = body()  # held here, so only an explicit close can run its cleanup
        response = ClosingStreamingResponse(iterator, media_type="audio/pcm")
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}}

        async def receive() -> Message:
            while len(sent) < 3:
                await asyncio.sleep(0)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)
            if len(sent) >= 3 and spec_version == "2.4":
                raise OSError("the client went away")
            if len(sent) >= 3:
                await asyncio.Event().wait()  # a send stuck on a gone client, until the disconnect cancels it

        with contextlib.suppress(ClientDisconnect):
            await response(scope, receive, send)
        assert cleaned_up.is_set()
        assert iterator is not None

    asyncio.run(scenario())
    assert 3 <= len(sent) < 1000  # cut short mid-stream
