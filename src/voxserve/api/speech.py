"""`POST /v1/audio/speech`: streamed audio (default), a buffered body (`stream: false`), or SSE events."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from voxserve.api.access import metered, require
from voxserve.api.protocol import SpeechRequest
from voxserve.api.state import get_speech, get_trace
from voxserve.api.streaming import audio_response, streaming_response, unless_disconnected
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import Principal
from voxserve.service.limits import Lease
from voxserve.service.response import AudioResponse
from voxserve.service.speech import SpeechService
from voxserve.service.timestamps import Timestamps

router = APIRouter()
CACHE_BYPASS_VALUES = ("no-cache", "no-store")


@router.post("/v1/audio/speech", response_model=None)
async def create_speech(
    body: SpeechRequest,
    request: Request,
    principal: Principal = Depends(require("speech")),
    lease: Lease = Depends(metered("speech")),
    speech: SpeechService = Depends(get_speech),
    trace: RequestTrace = Depends(get_trace),
) -> Response:
    trace.add("receive", trace.elapsed_s(), start_s=trace.started_at)  # reading and validating the body
    lease.charge(len(body.input))
    sse = body.stream_format == "sse"
    # Only a timed request gets JSON: clients that send `Accept: application/json` on every request still get audio.
    as_json = not sse and not body.stream and body.timestamps != "none" and _accepts_json(request)
    job = body.to_job(principal.caller, use_cache=_cache_allowed(request), timed=sse or as_json)
    audio = speech.open(job, trace)
    if sse:
        return await streaming_response(
            request, _sse_events(audio, job.timestamps), "text/event-stream", audio.headers, error_piece=_error_event
        )
    if as_json:
        return await _json_response(request, audio, job.timestamps)
    return await audio_response(request, audio, stream=body.stream)


def _accepts_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "").lower()


async def _json_response(request: Request, audio: AudioResponse, level: str) -> Response:
    """A buffered response as JSON: the audio in base64, with its timestamps when they were asked for."""
    body = await unless_disconnected(request, audio.body())
    payload: dict[str, object] = {"audio": base64.b64encode(body).decode(), "format": audio.response_format}
    if audio.timestamps is not None:
        payload["timestamps"] = Timestamps.join(audio.timestamps).as_dict(level)
    return JSONResponse(payload, headers=audio.headers())


def _cache_allowed(request: Request) -> bool:
    """`Cache-Control: no-cache|no-store` or `X-Voxserve-Cache: off` make a request skip the audio cache."""
    cache_control = request.headers.get("cache-control", "").lower()
    return request.headers.get("x-voxserve-cache", "").lower() != "off" and not any(
        value in cache_control for value in CACHE_BYPASS_VALUES
    )


async def _sse_events(audio: AudioResponse, level: str) -> AsyncIterator[bytes]:
    """Audio deltas; for a timed response, each segment's timestamps right after the delta that starts it."""
    sent = 0
    async with aclosing(audio.encoded()) as pieces:
        async for piece in pieces:
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()})
            for timestamps in (audio.timestamps or [])[sent:]:
                yield _event({"type": "speech.audio.timestamps", **timestamps.as_dict(level)})
                sent += 1
    for timestamps in (audio.timestamps or [])[sent:]:  # a segment whose audio the encoder held to its end
        yield _event({"type": "speech.audio.timestamps", **timestamps.as_dict(level)})
    summary = audio.trace.summary()
    chars = audio.trace.input_chars
    usage = {
        "input_tokens": chars, "output_tokens": 0, "total_tokens": chars, "input_characters": chars,
        "audio_seconds": summary["audio_s"],
    }  # fmt: skip
    yield _event({"type": "speech.audio.done", "usage": usage, "timing": summary})


def _error_event(error: dict[str, object]) -> bytes:
    """A stream that fails after it started ends with this event instead of `speech.audio.done`."""
    return _event({"type": "error", **error})


def _event(payload: dict[str, object]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
