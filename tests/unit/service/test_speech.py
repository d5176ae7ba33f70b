from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from tests.fakes import FakeEngine
from voxserve.cache.audio import AudioCache
from voxserve.errors import (
    EngineError,
    InputTooLongError,
    InvalidRequestError,
    NotFoundError,
    QueueFullError,
    VoiceNotFoundError,
)
from voxserve.obs.metrics import Metrics
from voxserve.scheduler.pool import Scheduler, SchedulerOptions
from voxserve.service.bootstrap import speech_options
from voxserve.service.speech import SpeechJob, SpeechService
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import load_settings
from voxserve.types import SynthesisParams

SENTENCES = [f"Sentence {n}." for n in range(20)]
TWENTY = " ".join(SENTENCES)  # twenty segments of at most 16 characters


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def speech_service(
    engine: FakeEngine, options: SchedulerOptions, metrics: Metrics | None = None, **settings: object
) -> SpeechService:
    loaded = load_settings(
        default_voice="fake", crossfade_ms=0, max_input_chars=400, first_segment_max_chars=20, **settings
    )
    return SpeechService(VoiceRegistry([engine], {}, "fake"), Scheduler(options, metrics), speech_options(loaded))


@pytest.fixture
def service(engine: FakeEngine) -> Iterator[SpeechService]:
    speech = speech_service(engine, SchedulerOptions(workers=2))
    yield speech
    speech.close()


@pytest.fixture
def single(engine: FakeEngine, metrics: Metrics) -> Iterator[SpeechService]:
    """One worker and a queue of six, so what runs, what is cancelled and what is held can be counted exactly."""
    speech = speech_service(engine, SchedulerOptions(workers=1, max_queue_size=6), metrics, max_segment_chars=16)
    yield speech
    speech.close()


def job(text: str = TWENTY) -> SpeechJob:
    return SpeechJob(text=text, voice="fake", response_format="wav")


async def collect(service: SpeechService, text: str) -> np.ndarray:
    stream = service.open(SpeechJob(text=text, voice="fake", model="fake", response_format="wav"))
    return np.concatenate([chunk.samples async for chunk in stream.audio()])


def cancelled(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("voxserve_segments_cancelled_total") or 0.0


def assert_holds_nothing(service: SpeechService) -> None:
    """Nothing queued or held: only then is a request far larger than the queue of six admitted."""
    service.scheduler.admit(1000).close()


def test_segments_come_back_in_order(service: SpeechService) -> None:
    text = "One. Two two. Three three three. Four four four four."
    audio = asyncio.run(collect(service, text))
    expected = np.concatenate(
        [np.full(len(s), len(s) / 100) for s in ("One.", "Two two.", "Three three three.", "Four four four four.")]
    )
    assert np.allclose(audio, expected)


def test_a_stream_holds_queue_room_only_while_it_is_iterated(single: SpeechService, engine: FakeEngine) -> None:
    _, release = engine.hold(SENTENCES[1])

    async def two_requests() -> None:
        first = single.open(job()).audio()
        second = single.open(job()).audio()  # opened: not admitted yet, so it holds nothing
        await anext(first)  # admitted; segments 2 to 19 wait behind segment 1
        with pytest.raises(QueueFullError):
            await anext(second)
        await first.aclose()

    asyncio.run(two_requests())
    release.set()
    single.close()
    assert_holds_nothing(single)


def test_a_hang_up_before_the_stream_starts_submits_nothing(single: SpeechService, engine: FakeEngine) -> None:
    prepared: list[str] = []
    engine.on_prepare = lambda params: prepared.append(params.text)

    async def hang_up() -> None:
        pending = asyncio.ensure_future(anext(single.open(job()).audio()))
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending

    asyncio.run(hang_up())
    assert prepared == []
    assert_holds_nothing(single)


def test_a_hang_up_while_segments_are_submitted_cancels_every_one_of_them(
    single: SpeechService, engine: FakeEngine, metrics: Metrics
) -> None:
    engine.gate.clear()  # segment 0 keeps the only worker busy until the end
    prepared: list[str] = []
    holding, resume = threading.Event(), threading.Event()

    def slow_phonemizer(params: SynthesisParams) -> None:
        prepared.append(params.text)
        if params.text == "Sentence 3.":
            holding.set()
            resume.wait(10)

    engine.on_prepare = slow_phonemizer

    async def hang_up() -> None:
        pending = asyncio.ensure_future(anext(single.open(job()).audio()))
        assert await asyncio.to_thread(holding.wait, 5)
        assert await asyncio.to_thread(engine.started.wait, 5)  # segment 0 is on the worker
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        resume.set()  # the submitting thread goes on after the hang-up; asyncio.run waits for it to end

    asyncio.run(hang_up())
    engine.gate.set()
    single.close()
    assert prepared == SENTENCES[:4]  # segment 3 was being prepared at the hang-up; nothing after it
    assert engine.ran == SENTENCES[:1]  # already running at the hang-up
    assert cancelled(metrics) == 2  # segments 1 and 2; segment 3 was refused, never queued
    assert_holds_nothing(single)


def test_leaving_a_stream_after_its_first_chunk_cancels_the_rest(
    single: SpeechService, engine: FakeEngine, metrics: Metrics
) -> None:
    running, release = engine.hold(SENTENCES[1])

    async def first_chunk_only() -> None:
        chunks = single.open(job()).audio()
        await anext(chunks)
        assert await asyncio.to_thread(running.wait, 5)
        await chunks.aclose()

    asyncio.run(first_chunk_only())
    release.set()
    single.close()
    assert engine.ran == SENTENCES[:2]
    assert cancelled(metrics) == 18
    assert_holds_nothing(single)


def test_a_failing_segment_fails_the_request_and_cancels_the_rest(
    single: SpeechService, engine: FakeEngine, metrics: Metrics
) -> None:
    release = threading.Event()

    def fail_segment_1(texts: list[str]) -> None:
        if texts == SENTENCES[1:2]:
            raise RuntimeError("boom")
        if texts == SENTENCES[2:3]:
            release.wait(10)  # if the worker takes segment 2 before the request ends, it runs no further

    engine.on_run = fail_segment_1

    async def buffered() -> None:
        with pytest.raises(EngineError):
            await single.open(job()).body()

    asyncio.run(buffered())
    release.set()
    single.close()
    assert engine.ran in ([SENTENCES[0]], [SENTENCES[0], SENTENCES[2]])
    assert cancelled(metrics) == 18 - (len(engine.ran) - 1)  # every other segment was dropped unrun
    assert_holds_nothing(single)


def test_rejects_empty_long_and_unknown(service: SpeechService) -> None:
    with pytest.raises(InvalidRequestError):
        service.open(SpeechJob(text="  ", voice="fake"))
    with pytest.raises(InputTooLongError):
        service.open(SpeechJob(text="a" * 401, voice="fake"))
    with pytest.raises(VoiceNotFoundError):
        service.open(SpeechJob(text="hello", voice="nobody"))


def test_captions_of_a_result_need_it_cached_with_timings(engine: FakeEngine) -> None:
    speech = speech_service(engine, SchedulerOptions(workers=1))
    speech.audio_cache = AudioCache(2**20)
    try:
        response = speech.open(job("Hello there."))
        asyncio.run(response.body())
        result = response.headers()["X-Voxserve-Result"]
        assert speech.audio_cache.get(result) is not None
        with pytest.raises(NotFoundError) as untimed:  # the fake engine gives no timings
            speech.cached_captions(result, "vtt", 42)
        assert untimed.value.code == "captions_not_found"
        with pytest.raises(NotFoundError) as unknown:
            speech.cached_captions("0" * 64, "vtt", 42)
        assert unknown.value.code == "result_not_found"
    finally:
        speech.close()


def test_a_first_segment_streams_window_by_window_into_the_same_audio() -> None:
    text = "One two three four five six. Seven eight."
    plain = speech_service(FakeEngine(), SchedulerOptions(workers=1))
    engine = FakeEngine(windows=4)
    windowed = speech_service(engine, SchedulerOptions(workers=1))
    try:
        expected = asyncio.run(collect(plain, text))

        async def chunks() -> list[np.ndarray]:
            stream = windowed.open(SpeechJob(text=text, voice="fake", model="fake", response_format="wav"))
            return [chunk.samples async for chunk in stream.audio()]

        got = asyncio.run(chunks())
    finally:
        plain.close()
        windowed.close()
    np.testing.assert_array_equal(np.concatenate(got), expected)
    assert [text for text in engine.ran if "#" in text] == [f"{engine.ran[0]}#{n}" for n in (1, 2, 3)]
    assert len([chunk for chunk in got if len(chunk)]) >= 4  # each window is audio as soon as it is made
