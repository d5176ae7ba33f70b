"""`POST /v1/audio/speech`: streamed audio (default), a buffered body (`stream: false`), or SSE events."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from voxserve.api.protocol import SpeechRequest
from voxserve.api.state import get_speech
from voxserve.service.speech import SpeechService, SpeechStream

router = APIRouter()


@router.post("/v1/audio/speech", response_model=None)
async def create_speech(body: SpeechRequest, request: Request, speech: SpeechService = Depends(get_speech)) -> Response:
    stream = speech.open(body.to_job(), request.headers.get("x-request-id"))
    if body.stream_format == "sse":
        return await _streaming_response(_sse_events(stream), "text/event-stream", stream)
    if not body.stream:
        content = await stream.body()
        return Response(content, media_type=stream.content_type, headers=_headers(stream))
    return await _streaming_response(stream.encoded(), stream.content_type, stream)


async def _streaming_response(pieces: AsyncIterator[bytes], media_type: str, stream: SpeechStream) -> Response:
    """Start the body only once its first piece exists, so a failure before any audio is a proper error
    response, and `Server-Timing` can report the time to first audio."""
    first = await anext(pieces, b"")

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(pieces):
            yield first
            async for piece in pieces:
                yield piece

    return StreamingResponse(body(), media_type=media_type, headers=_headers(stream))


async def _sse_events(stream: SpeechStream) -> AsyncIterator[bytes]:
    async with aclosing(stream.encoded()) as pieces:
        async for piece in pieces:
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()})
    summary = stream.trace.summary()
    chars = stream.trace.input_chars
    usage = {
        "input_tokens": chars,
        "output_tokens": 0,
        "total_tokens": chars,
        "input_characters": chars,
        "audio_seconds": summary["audio_s"],
    }
    yield _event({"type": "speech.audio.done", "usage": usage, "timing": summary})


def _event(payload: dict[str, object]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _headers(stream: SpeechStream) -> dict[str, str]:
    headers = {
        "Server-Timing": stream.trace.server_timing(),
        "X-Request-Id": stream.trace.request_id,
        "X-Voxserve-Voice": stream.voice.id,
        "X-Voxserve-Sample-Rate": str(stream.voice.sample_rate),
    }
    if stream.instructions_ignored:
        headers["X-Voxserve-Instructions"] = "ignored"
    return headers
