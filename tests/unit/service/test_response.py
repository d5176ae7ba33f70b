"""`AudioResponse`, what speech and conversion answer with: one encoder per response, closed however the response
ends (an abandoned one leaves no codec threads behind), and a body kept only when it was made to its end."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator

import numpy as np
import pytest

from tests.conftest import decode
from voxserve.cache.audio import CachedAudio
from voxserve.obs.trace import RequestTrace
from voxserve.service.response import AudioResponse
from voxserve.types import AudioChunk

RATE = 22_050
CHUNKS = 8


class ToneSource:
    """Half-second chunks of a tone; records how far it was read and whether it was closed."""

    def __init__(self) -> None:
        self.given = 0
        self.closed = False

    async def chunks(self) -> AsyncGenerator[AudioChunk, None]:
        t = np.arange(RATE // 2) / RATE
        try:
            for _ in range(CHUNKS):
                self.given += 1
                yield AudioChunk((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), RATE)
        finally:
            self.closed = True


def native_threads() -> int:
    """Threads started by native code (the codecs'), not by Python (the loop's executor may grow meanwhile)."""
    return len(os.listdir("/proc/self/task")) - threading.active_count()


def test_a_whole_body_is_kept_and_counted() -> None:
    source, kept = ToneSource(), []
    response = AudioResponse(source.chunks, "mp3", RATE, RequestTrace(), headers={"X-Extra": "1"}, keep=kept.append)
    body = asyncio.run(response.body())
    assert kept == [body]
    samples, rate = decode(body)
    assert len(samples) / rate == pytest.approx(CHUNKS / 2, rel=0.05)
    assert response.trace.audio_s == pytest.approx(CHUNKS / 2)
    assert response.headers()["X-Extra"] == "1"
    assert response.headers()["X-Voxserve-Sample-Rate"] == str(RATE)


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac"])
def test_an_abandoned_response_closes_its_source_and_its_encoder_at_once(response_format: str) -> None:
    sources, kept = [ToneSource() for _ in range(4)], []

    async def abandon() -> tuple[int, int, int]:
        before = native_threads()
        bodies = [AudioResponse(source.chunks, response_format, RATE, RequestTrace(), keep=kept.append).encoded()
                  for source in sources]  # fmt: skip
        for body in bodies:
            await anext(body)
        while_open = native_threads()
        for body in bodies:
            await body.aclose()
        # Still referenced here, so the garbage collector cannot be what frees them.
        return before, while_open, native_threads()

    before, while_open, after = asyncio.run(abandon())
    assert while_open > before  # the codecs run threads of their own while they encode
    assert after <= before
    assert all(source.closed and source.given < CHUNKS for source in sources)
    assert kept == []


def test_a_replayed_response_sends_the_cached_body_without_making_audio() -> None:
    source = ToneSource()
    cached = CachedAudio(b"ID3-cached", "audio/mpeg", "voice", RATE, 1.5)
    response = AudioResponse.replay(cached, "mp3", RequestTrace(), headers={"X-Voxserve-Cache": "hit"})
    assert asyncio.run(response.body()) == b"ID3-cached"
    assert response.trace.audio_s == 1.5
    assert response.trace.first_audio_s is not None
    assert source.given == 0
    assert response.headers()["X-Voxserve-Cache"] == "hit"
