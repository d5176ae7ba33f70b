"""`AudioResponse`: what speech and conversion both answer with. A lazy source of audio chunks goes through one
encoder, streamed piece by piece or gathered into one body, with the headers that describe it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing

from voxserve.audio.encode import CONTENT_TYPES, create_encoder, seal
from voxserve.cache.audio import CachedAudio
from voxserve.obs.trace import RequestTrace
from voxserve.service.timestamps import Timestamps
from voxserve.types import AudioChunk

ChunkSource = Callable[[], AsyncGenerator[AudioChunk, None]]


class AudioResponse:
    """One response's audio. Lazy: nothing runs until `audio()`, `encoded()` or `body()` is iterated, and
    leaving the iteration early closes the source (which stops the work behind it). `keep` receives the whole
    body of a response that was encoded to its end (to cache it). A timed response's `timestamps` grows by one
    entry per segment as its audio is made, each before the chunk that starts that segment."""

    def __init__(
        self, chunks: ChunkSource | None, response_format: str, sample_rate: int, trace: RequestTrace, *,
        headers: Mapping[str, str] | None = None, keep: Callable[[bytes], None] | None = None,
        replay: CachedAudio | None = None, timestamps: list[Timestamps] | None = None,
    ) -> None:  # fmt: skip
        self.trace = trace
        self.timestamps = timestamps
        self.response_format = response_format
        self.sample_rate = sample_rate
        self._chunks = chunks
        self._headers = dict(headers or {})
        self._replay = replay
        self._keep = keep

    @classmethod
    def replay(
        cls, cached: CachedAudio, response_format: str, trace: RequestTrace, *, headers: Mapping[str, str] | None = None
    ) -> AudioResponse:
        """A response answered from a cached body, with no audio to make."""
        return cls(None, response_format, cached.sample_rate, trace, headers=headers, replay=cached)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.response_format]

    def headers(self) -> dict[str, str]:
        """The response's headers; `Server-Timing` holds the stages timed so far (read when the body starts)."""
        return {
            "Server-Timing": self.trace.server_timing(),
            "X-Request-Id": self.trace.request_id,
            "X-Voxserve-Sample-Rate": str(self.sample_rate),
            **self._headers,
        }

    async def audio(self) -> AsyncGenerator[AudioChunk, None]:
        """The audio, chunk by chunk, counted into the trace."""
        assert self._chunks is not None, "a replayed response has no audio to decode; use encoded()"
        async with aclosing(self._chunks()) as chunks:
            async for chunk in chunks:
                self.trace.audio_s += chunk.duration_s
                yield chunk

    async def encoded(self) -> AsyncIterator[bytes]:
        """The body, piece by piece, through this response's one encoder; the trace finishes once the encoder
        is flushed. The encoder is closed however this ends, so an abandoned response leaves no codec behind."""
        if self._replay is not None:
            self.trace.audio_s = self._replay.audio_s
            self.trace.mark_first_audio()
            self.trace.finish()
            yield self._replay.body
            return
        pieces: list[bytes] = []  # only while someone will keep the body
        keeping = self._keep is not None
        encoder = create_encoder(self.response_format, self.sample_rate)
        flushed = False
        try:
            async with aclosing(self.audio()) as chunks:
                async for chunk in chunks:
                    data = await self.trace.in_thread("encode", encoder.encode, chunk.samples)
                    if data:
                        self.trace.mark_first_audio()
                        if keeping:
                            pieces.append(data)
                        yield data
            tail = await self.trace.in_thread("encode", encoder.flush)
            flushed = True
        finally:
            if flushed:
                encoder.close()  # nothing runs in the encoder any more, and flush freed the muxer: this is cheap
            else:
                # Cut short: an encode may still run in its thread, which close waits for, so off the event loop;
                # shielded, because a cancelled response's awaits are cancelled again, and the close must still run.
                await asyncio.shield(asyncio.to_thread(encoder.close))
        self.trace.finish()
        if tail:
            yield tail
        if self._keep is not None:
            self._keep(b"".join([*pieces, tail]))

    async def body(self) -> bytes:
        """The whole body at once (its container header completed), for clients that did not stream."""
        return seal(self.response_format, b"".join([piece async for piece in self.encoded()]))
