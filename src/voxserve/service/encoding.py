"""One response's audio through one encoder, with the time spent encoding and the first audio recorded."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from voxserve.audio.encode import create_encoder, seal
from voxserve.obs.trace import RequestTrace
from voxserve.types import AudioChunk


async def encode_chunks(
    chunks: AsyncGenerator[AudioChunk, None], response_format: str, sample_rate: int, trace: RequestTrace
) -> AsyncIterator[bytes]:
    """The encoded body, piece by piece; the trace finishes once the encoder is flushed. `chunks` is closed
    however this ends (an encoder failure too), so the work behind it stops then, not when it is collected."""
    encoder = create_encoder(response_format, sample_rate)
    async with aclosing(chunks):
        async for chunk in chunks:
            data = await trace.in_thread("encode", encoder.encode, chunk.samples)
            if data:
                trace.mark_first_audio()
                yield data
    tail = await trace.in_thread("encode", encoder.flush)
    trace.finish()
    if tail:
        yield tail


async def whole_body(response_format: str, pieces: AsyncIterator[bytes]) -> bytes:
    """A streamed body gathered into one, its container header completed, for clients that did not stream."""
    return seal(response_format, b"".join([piece async for piece in pieces]))
