"""Streamed response bodies that start only once their first piece exists, end cleanly when the work behind them
fails, and abandon that work when the client disconnects."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, suppress
from typing import TypeVar

from fastapi import Request, Response, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.types import Scope, Send

from voxserve.api.errors import error_response
from voxserve.api.state import get_trace
from voxserve.errors import ClientDisconnectedError, VoxError
from voxserve.obs.telemetry import Telemetry
from voxserve.service.response import AudioResponse

T = TypeVar("T")
ErrorPiece = Callable[[dict[str, object]], bytes]
STREAM_ERROR_KEY = "voxserve_stream_error"
logger = logging.getLogger(__name__)


async def streaming_response(
    request: Request,
    pieces: AsyncIterator[bytes],
    media_type: str,
    headers: Callable[[], dict[str, str]],
    error_piece: ErrorPiece | None = None,
) -> Response:
    """Start the body only once its first piece exists, so a failure before any audio is a proper error
    response, and `headers()` (read then) can report the time to first audio in `Server-Timing`.

    A failure after that can no longer change the status: the body ends cleanly after what was sent, with
    `error_piece(error)` last where the format can carry it (an SSE error event; `error` is the OpenAI error
    object `{"error": {...}}` the client may see). The request is marked failed (`stream_error`) for telemetry.
    HTTP trailers would be the way to flag a cut-short audio body, but uvicorn's HTTP/1.1 server cannot send them."""
    first = await unless_disconnected(request, anext(pieces, b""))

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(pieces):
            yield first
            try:
                async for piece in pieces:
                    yield piece
            except Exception as exc:
                error = _record_failure(request, exc)
                if error_piece is not None:
                    yield error_piece(error)

    return ClosingStreamingResponse(body(), media_type=media_type, headers=headers())


class ClosingStreamingResponse(StreamingResponse):
    """A streamed body whose iterator is closed however the response ends. Starlette's leaves it suspended when
    the client leaves mid-stream; it is closed only when garbage collected, and a reference cycle (a traceback)
    can hold it for minutes, with its queue room, its queued segments and its encoder. Measured in the soak: 429s
    for ordinary requests after hang-ups, and encoder threads alive until a `gc.collect()`."""

    async def stream_response(self, send: Send) -> None:
        async with aclosing(self.body_iterator):  # type: ignore[type-var]
            await super().stream_response(send)


async def audio_response(request: Request, audio: AudioResponse, *, stream: bool) -> Response:
    """`audio` as the client asked: streamed as it is made, or as one body once it is all there."""
    if stream:
        return await streaming_response(request, audio.encoded(), audio.content_type, audio.headers)
    content = await unless_disconnected(request, audio.body())
    return Response(content, media_type=audio.content_type, headers=audio.headers())


def stream_error(scope: Scope) -> VoxError | None:
    """The error a streamed response failed with after it had started, if it did."""
    return scope.get("state", {}).get(STREAM_ERROR_KEY)


def _record_failure(request: Request, exc: Exception) -> dict[str, object]:
    """Log `exc`, mark the request failed, and return the error object the client may be shown (a 500's
    internals stay in the log, as for any error response)."""
    request_id = get_trace(request).request_id
    if isinstance(exc, VoxError):
        error = exc
        logger.warning("request %s: stream cut short after it started: %s (%s)", request_id, exc.message, exc.code)
    else:
        error = VoxError("internal server error")
        logger.exception("request %s: stream cut short after it started", request_id, exc_info=exc)
    request.scope.setdefault("state", {})[STREAM_ERROR_KEY] = error
    return json.loads(error_response(error, request_id).body)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, abandoning it (and with it the request's queued segments) if the client disconnects."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()  # whoever awaited this is gone, so is whoever wanted the work
        raise
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


async def play_streamed(
    response: AudioResponse, route: str, telemetry: Telemetry, send: Callable[[bytes], Awaitable[None]]
) -> None:
    """A streamed-text response (WebSocket, Wyoming) played through `send`, piece by piece, and recorded under
    `route` with how it ended: 499 when it was cancelled or its client left (`ClientDisconnectedError`), a
    `VoxError`'s status when it failed (raised for the caller to report), 500 for anything else (logged under the
    response's id and raised as a `VoxError` that shows none of it)."""
    trace = response.trace
    status = 200
    try:
        async with aclosing(response.encoded()) as pieces:
            async for piece in pieces:
                await send(piece)
    except asyncio.CancelledError:
        status = 499
        raise
    except (ConnectionError, WebSocketDisconnect) as exc:
        status = 499
        raise ClientDisconnectedError("the client went away") from exc
    except VoxError as error:
        status = error.status_code
        raise
    except Exception as exc:
        status = 500
        logger.exception("response %s on %s failed", trace.request_id, route, exc_info=exc)
        raise VoxError("internal server error") from exc
    finally:
        telemetry.observe(route, status, trace, trace.elapsed_s())
