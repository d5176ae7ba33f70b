from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from tests.fakes import FakeEngine
from voxserve.errors import InputTooLongError, InvalidRequestError, VoiceNotFoundError
from voxserve.scheduler.pool import Scheduler, SchedulerOptions
from voxserve.service.speech import SpeechJob, SpeechService
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import load_settings


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def service(engine: FakeEngine) -> Iterator[SpeechService]:
    settings = load_settings(default_voice="fake", crossfade_ms=0, max_input_chars=400, first_segment_max_chars=20)
    speech = SpeechService(VoiceRegistry([engine], {}, "fake"), Scheduler(SchedulerOptions(workers=2)), settings)
    yield speech
    speech.close()


async def collect(service: SpeechService, text: str) -> np.ndarray:
    stream = service.open(SpeechJob(text=text, voice="fake", model="fake", response_format="wav"))
    return np.concatenate([chunk.samples async for chunk in stream.audio()])


def test_segments_come_back_in_order(service: SpeechService) -> None:
    text = "One. Two two. Three three three. Four four four four."
    audio = asyncio.run(collect(service, text))
    expected = np.concatenate(
        [np.full(len(s), len(s) / 100) for s in ("One.", "Two two.", "Three three three.", "Four four four four.")]
    )
    assert np.allclose(audio, expected)


def test_leaving_a_stream_early_cancels_its_queued_segments(service: SpeechService, engine: FakeEngine) -> None:
    async def first_chunk_only() -> None:
        stream = service.open(SpeechJob(text=" ".join(f"Sentence {n}." for n in range(20)), voice="fake"))
        chunks = stream.audio()
        await anext(chunks)
        await chunks.aclose()

    engine.delay_s = 0.05
    asyncio.run(first_chunk_only())
    service.scheduler.close()
    assert 1 <= len(engine.ran) < 6


def test_rejects_empty_long_and_unknown(service: SpeechService) -> None:
    with pytest.raises(InvalidRequestError):
        service.open(SpeechJob(text="  ", voice="fake"))
    with pytest.raises(InputTooLongError):
        service.open(SpeechJob(text="a" * 401, voice="fake"))
    with pytest.raises(VoiceNotFoundError):
        service.open(SpeechJob(text="hello", voice="nobody"))
