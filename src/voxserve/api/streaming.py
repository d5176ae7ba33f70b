"""Streamed response bodies that start only once their first piece exists, and work abandoned when the client
disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, suppress
from typing import TypeVar

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from voxserve.errors import ClientDisconnectedError

T = TypeVar("T")


async def streaming_response(
    request: Request, pieces: AsyncIterator[bytes], media_type: str, headers: Callable[[], dict[str, str]]
) -> Response:
    """Start the body only once its first piece exists, so a failure before any audio is a proper error
    response, and `headers()` (read then) can report the time to first audio in `Server-Timing`."""
    first = await unless_disconnected(request, anext(pieces, b""))

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(pieces):
            yield first
            async for piece in pieces:
                yield piece

    return StreamingResponse(body(), media_type=media_type, headers=headers())


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
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
