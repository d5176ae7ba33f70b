"""`POST /v1/audio/speech`: streamed audio (default), a buffered body (`stream: false`), or SSE events."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Depends, Request, Response

from voxserve.api.access import metered, require
from voxserve.api.protocol import SpeechRequest
from voxserve.api.state import get_speech, get_trace
from voxserve.api.streaming import audio_response, streaming_response
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import Principal
from voxserve.service.limits import Lease
from voxserve.service.response import AudioResponse
from voxserve.service.speech import SpeechService

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
    audio = speech.open(body.to_job(principal.caller, use_cache=_cache_allowed(request)), trace)
    if body.stream_format == "sse":
        return await streaming_response(
            request, _sse_events(audio), "text/event-stream", audio.headers, error_piece=_error_event
        )
    return await audio_response(request, audio, stream=body.stream)


def _cache_allowed(request: Request) -> bool:
    """`Cache-Control: no-cache|no-store` or `X-Voxserve-Cache: off` make a request skip the audio cache."""
    cache_control = request.headers.get("cache-control", "").lower()
    return request.headers.get("x-voxserve-cache", "").lower() != "off" and not any(
        value in cache_control for value in CACHE_BYPASS_VALUES
    )


async def _sse_events(audio: AudioResponse) -> AsyncIterator[bytes]:
    async with aclosing(audio.encoded()) as pieces:
        async for piece in pieces:
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()})
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
