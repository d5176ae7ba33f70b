"""`POST /v1/audio/speech`: streamed audio (default), a buffered body (`stream: false`), or SSE events."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing, suppress
from typing import TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from voxserve.api.protocol import SpeechRequest
from voxserve.api.state import get_speech, get_trace
from voxserve.errors import ClientDisconnectedError
from voxserve.obs.trace import RequestTrace
from voxserve.service.speech import SpeechService, SpeechStream

router = APIRouter()
T = TypeVar("T")
CACHE_BYPASS_VALUES = ("no-cache", "no-store")


@router.post("/v1/audio/speech", response_model=None)
async def create_speech(
    body: SpeechRequest,
    request: Request,
    speech: SpeechService = Depends(get_speech),
    trace: RequestTrace = Depends(get_trace),
) -> Response:
    trace.add("receive", trace.elapsed_s(), start_s=trace.started_at)  # reading and validating the body
    stream = speech.open(body.to_job(use_cache=_cache_allowed(request)), trace)
    if body.stream_format == "sse":
        return await _streaming_response(request, _sse_events(stream), "text/event-stream", stream)
    if not body.stream:
        content = await _unless_disconnected(request, stream.body())
        return Response(content, media_type=stream.content_type, headers=_headers(stream))
    return await _streaming_response(request, stream.encoded(), stream.content_type, stream)


def _cache_allowed(request: Request) -> bool:
    """`Cache-Control: no-cache|no-store` or `X-Voxserve-Cache: off` make a request skip the audio cache."""
    cache_control = request.headers.get("cache-control", "").lower()
    return request.headers.get("x-voxserve-cache", "").lower() != "off" and not any(
        value in cache_control for value in CACHE_BYPASS_VALUES
    )


async def _streaming_response(
    request: Request, pieces: AsyncIterator[bytes], media_type: str, stream: SpeechStream
) -> Response:
    """Start the body only once its first piece exists, so a failure before any audio is a proper error
    response, and `Server-Timing` can report the time to first audio."""
    first = await _unless_disconnected(request, anext(pieces, b""))

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(pieces):
            yield first
            async for piece in pieces:
                yield piece

    return StreamingResponse(body(), media_type=media_type, headers=_headers(stream))


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, abandoning it (and with it the request's queued segments) if the client disconnects."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    raise ClientDisconnectedError("the client disconnected before the audio was ready")


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse_events(stream: SpeechStream) -> AsyncIterator[bytes]:
    async with aclosing(stream.encoded()) as pieces:
        async for piece in pieces:
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()})
    summary = stream.trace.summary()
    chars = stream.trace.input_chars
    usage = {
        "input_tokens": chars, "output_tokens": 0, "total_tokens": chars, "input_characters": chars,
        "audio_seconds": summary["audio_s"],
    }  # fmt: skip
    yield _event({"type": "speech.audio.done", "usage": usage, "timing": summary})


def _event(payload: dict[str, object]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _headers(stream: SpeechStream) -> dict[str, str]:
    headers = {
        "Server-Timing": stream.trace.server_timing(),
        "X-Request-Id": stream.trace.request_id,
        "X-Voxserve-Voice": stream.voice.id,
        "X-Voxserve-Sample-Rate": str(stream.voice.sample_rate),
        "X-Voxserve-Cache": stream.cache_status,
    }
    if stream.instructions_ignored:
        headers["X-Voxserve-Instructions"] = "ignored"
    return headers
