"""`GET /v1/audio/speech/stream` (WebSocket): speech while the text is still being written.

The client sends JSON events (`session.update`, `input_text.append`, `input_text.flush`, `input_text.end`,
`response.cancel`); the server answers with audio as binary frames and JSON events (`session.created`,
`session.updated`, `segment.started`, `timestamps`, `segment.done`, `done`, `error`). Responses play one after
another; `response.cancel` stops the audio at once and takes its queued segments out of the scheduler."""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress
from typing import Annotated, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from voxserve.api.access import UNLIMITED
from voxserve.api.errors import shown_error
from voxserve.api.protocol import MAX_INSTRUCTIONS_CHARS, ResponseFormat, VoiceRef
from voxserve.api.state import AppState, sane_request_id
from voxserve.api.streaming import play_streamed
from voxserve.errors import (
    AuthenticationError,
    ClientDisconnectedError,
    ConflictError,
    InvalidRequestError,
    NotReadyError,
    VoxError,
)
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import Principal
from voxserve.service.bootstrap import Services
from voxserve.service.limits import Lease
from voxserve.service.speech import SpeechJob, StreamedSpeech
from voxserve.service.text_stream import TextSpeechSession

router = APIRouter()
logger = logging.getLogger(__name__)
ROUTE = "websocket"
KEY_PROTOCOL = "voxserve-key."  # a browser cannot set headers on a WebSocket: it offers its key as a subprotocol
MAX_MESSAGE_CHARS = 16_384  # a message's text is filtered and segmented on the event loop: keep each bounded
MAX_RESPONSES = 4  # responses playing or waiting to, per connection


class SessionSettings(BaseModel):
    """The speech fields a session speaks with (those of `POST /v1/audio/speech`, `input` aside)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    voice: str | VoiceRef | None = None
    response_format: ResponseFormat | None = None
    speed: float | None = Field(None, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=MAX_INSTRUCTIONS_CHARS)
    timestamps: Literal["none", "word", "phoneme"] | None = None

    def fields(self) -> dict[str, object]:
        given = self.model_dump(exclude_none=True)
        if isinstance(self.voice, VoiceRef):
            given["voice"] = self.voice.id
        return given


class SessionUpdate(BaseModel):
    type: Literal["session.update"]
    session: SessionSettings


class TextAppend(BaseModel):
    type: Literal["input_text.append"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS)


class TextControl(BaseModel):
    type: Literal["input_text.flush", "input_text.end", "response.cancel"]


ClientEvent = TypeAdapter(Annotated[SessionUpdate | TextAppend | TextControl, Field(discriminator="type")])


@router.websocket("/v1/audio/speech/stream")
async def speech_stream(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.voxserve
    request_id = sane_request_id(websocket.headers.get("x-request-id")) or RequestTrace(None, enabled=False).request_id
    offered = [protocol.strip() for protocol in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    await websocket.accept(subprotocol="voxserve" if "voxserve" in offered else None)
    try:
        services, principal, lease = _admit(state, websocket, offered)
    except VoxError as error:
        await websocket.send_json({"type": "error", **shown_error(error, request_id)})
        await websocket.close(1008 if isinstance(error, AuthenticationError) else 1013)
        return
    try:
        await _Connection(websocket, services, principal, lease, request_id).run()
    finally:
        lease.release()


def _admit(state: AppState, websocket: WebSocket, offered: list[str]) -> tuple[Services, Principal, Lease]:
    """The services (once warm), the caller's principal (the `Authorization` header, or a key subprotocol) with
    the `speech` scope, and its lease on the key's limits: the session is one request and one stream."""
    services = state.services
    if services is None or not state.ready:
        raise NotReadyError("voices are still loading; retry shortly")
    authorization = websocket.headers.get("authorization")
    keyed = next((protocol for protocol in offered if protocol.startswith(KEY_PROTOCOL)), None)
    if authorization is None and keyed is not None:
        authorization = f"Bearer {keyed.removeprefix(KEY_PROTOCOL)}"
    principal = services.access.authenticate(authorization)
    services.access.authorize(principal, "speech")
    lease = services.limiter.admit(principal.key_id or "", principal.limits if principal.key_id else UNLIMITED)
    return services, principal, lease


class _Connection:
    """One WebSocket: reads the client's events and plays its responses in order, each after the one before.
    Sends go through one lock, so events and audio frames never interleave mid-message."""

    def __init__(
        self, websocket: WebSocket, services: Services, principal: Principal, lease: Lease, connection_id: str
    ) -> None:
        self._websocket = websocket
        self._services = services
        self._lease = lease
        self._id = connection_id
        self._send_lock = asyncio.Lock()
        self._playing: list[asyncio.Task[None]] = []  # in order; each waits for the one before it
        default = services.speech.registry.default_voice.id
        job = SpeechJob(text="", voice=default, response_format="pcm", caller=principal.caller, use_cache=False)
        self._session = TextSpeechSession(services.speech, services.text_stream, job, services.telemetry.new_trace)

    async def run(self) -> None:
        await self._send({"type": "session.created", "session": self._settings()})
        idle_s = self._services.text_stream.idle_timeout_s
        try:
            while True:
                # A client listening to a long reply sends nothing, and is not idle.
                async with asyncio.timeout(None if self._playing else idle_s):
                    message = await self._websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    await self._handle(message)
                except VoxError as error:
                    await self._send({"type": "error", **shown_error(error, self._id)})
        except TimeoutError:
            await self._send({"type": "error", **InvalidRequestError(
                f"no message for {idle_s:g} s; closing", code="idle_timeout").to_dict()})  # fmt: skip
            await self._websocket.close(1000)
        except WebSocketDisconnect:
            return
        finally:
            await self._stop_playing()

    async def _handle(self, message: dict[str, object]) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            raise InvalidRequestError("send JSON events as text frames", code="invalid_event")
        try:
            event = ClientEvent.validate_json(text)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem.get("loc", ())) or "event"
            raise InvalidRequestError(f"{where}: {problem.get('msg', 'invalid')}", code="invalid_event") from None
        session = self._session
        if isinstance(event, SessionUpdate):
            session.update(**event.session.fields())
            await self._send({"type": "session.updated", "session": self._settings()})
        elif isinstance(event, TextAppend):
            if session.response is None and len(self._playing) >= MAX_RESPONSES:
                raise ConflictError(f"at most {MAX_RESPONSES} responses may wait to play; cancel, or wait for done",
                                    code="too_many_responses")  # fmt: skip
            session.check(event.text)
            self._lease.charge(len(event.text))
            opened, _ = session.append(event.text)
            if opened is not None:
                self._play(opened)
        elif event.type == "input_text.flush":
            session.flush()
        elif event.type == "input_text.end":
            session.end()
        else:
            session.cancel()
            await self._stop_playing()

    def _settings(self) -> dict[str, object]:
        job = self._session.job
        return {"voice": job.voice, "model": job.model, "response_format": job.response_format, "speed": job.speed,
                "instructions": job.instructions, "timestamps": job.timestamps}  # fmt: skip

    def _play(self, streamed: StreamedSpeech) -> None:
        """Plays `streamed` once the response before it has played."""
        before = self._playing[-1] if self._playing else None
        task = asyncio.create_task(self._send_response(streamed, before))
        self._playing.append(task)
        task.add_done_callback(lambda done: done in self._playing and self._playing.remove(done))

    async def _stop_playing(self) -> None:
        playing, self._playing = self._playing, []
        for task in playing:
            task.cancel()
        await asyncio.gather(*playing, return_exceptions=True)

    async def _send_response(self, streamed: StreamedSpeech, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)
        response = streamed.response
        response_id = response.trace.request_id
        progress = [0, 0]  # segments announced, timestamps sent

        async def send(piece: bytes) -> None:
            await self._segment_events(streamed, progress)
            await self._send_bytes(piece)

        try:
            await play_streamed(response, ROUTE, self._services.telemetry, send)
            await self._segment_events(streamed, progress)
            if streamed.started:
                await self._send({"type": "segment.done", "response_id": response_id,
                                  "segment": len(streamed.started) - 1})  # fmt: skip
            outcome = "completed"
        except asyncio.CancelledError:
            with suppress(Exception):
                await asyncio.shield(self._send(_done(response_id, response.trace, "cancelled")))
            raise
        except ClientDisconnectedError:
            return
        except VoxError as error:
            outcome = "failed"
            await self._send({"type": "error", "response_id": response_id, **shown_error(error, response_id)})
        with suppress(WebSocketDisconnect, RuntimeError, ConnectionError):  # the client may have gone meanwhile
            await self._send(_done(response_id, response.trace, outcome))

    async def _segment_events(self, streamed: StreamedSpeech, progress: list[int]) -> None:
        """Events for the segments whose audio starts in the frame about to be sent: the one before is done,
        this one starts (with its timestamps when the session asked for them)."""
        response_id = streamed.response.trace.request_id
        for started in streamed.started[progress[0] :]:
            if started.index > 0:
                await self._send({"type": "segment.done", "response_id": response_id, "segment": started.index - 1})
            await self._send({"type": "segment.started", "response_id": response_id, "segment": started.index,
                              "text": started.text, "start_s": round(started.start_s, 6)})  # fmt: skip
            progress[0] += 1
        for segment in (streamed.response.timestamps or [])[progress[1] :]:
            await self._send({"type": "timestamps", "response_id": response_id, **segment.as_dict(streamed.level)})
            progress[1] += 1

    async def _send(self, event: dict[str, object]) -> None:
        async with self._send_lock:
            await self._websocket.send_text(json.dumps(event, separators=(",", ":")))

    async def _send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self._websocket.send_bytes(data)


def _done(response_id: str, trace: RequestTrace, outcome: str) -> dict[str, object]:
    summary = trace.summary()
    chars = trace.input_chars
    usage = {"input_characters": chars, "audio_seconds": summary["audio_s"]}
    return {"type": "done", "response_id": response_id, "status": outcome, "usage": usage, "timing": summary}
