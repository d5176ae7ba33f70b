"""Conversions and voice registrations are admitted and scheduled like speech: a limit on how many run at once
(429 with Retry-After beyond it), a deadline (504) that stops the work at its next window, the pool's own threads
(speech keeps its executor), and base-voice profiling on the shared scheduler.

Deterministic: a gated converter holds windows where a test needs them; no test races the clock."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.unit.service.buzz import (
    HIGH,
    LOW,
    RATE,
    WAIT_S,
    BuzzEngine,
    buzz,
    engine_items,
    library_settings,
    profile_texts,
)
from voxserve.audio.decode import decode_audio
from voxserve.audio.encode import create_encoder
from voxserve.conversion.base import ConversionOptions
from voxserve.conversion.cancellation import Cancellation
from voxserve.conversion.features import VoiceFeatures
from voxserve.conversion.pool import THREAD_PREFIX, ConversionPool, ConversionPoolOptions
from voxserve.errors import DeadlineExceededError, QueueFullError
from voxserve.net.fetch import FetchOptions, UrlFetcher
from voxserve.obs.metrics import Metrics
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.pool import Scheduler
from voxserve.service.bootstrap import conversion_options, library_options, speech_options
from voxserve.service.conversion import ConversionJob, ConversionService, Upload, VoiceRegistration
from voxserve.service.speech import SpeechJob, SpeechService
from voxserve.service.voice_library import VoiceLibrary
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import Settings
from voxserve.storage.voices import VoiceStore
from voxserve.types import AudioChunk, Caller

SOURCE_S = 2.0
WINDOW_S = 0.5
WINDOWS = 4  # SOURCE_S / WINDOW_S: one plan.apply per window


class GatedConverter:
    """Converts by returning its input. Each window waits at `gate` (open unless a test closes it); `started`
    says a window has reached it; `windows` lists the thread of each window that finished."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.windows: list[str] = []

    def plan(self, source: VoiceFeatures, target: VoiceFeatures, options: ConversionOptions) -> GatedConverter:
        return self

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        self.started.set()
        self.gate.wait(timeout=WAIT_S)
        self.windows.append(threading.current_thread().name)
        return samples


def wav(audio: AudioChunk) -> bytes:
    encoder = create_encoder("wav", audio.sample_rate)
    return encoder.encode(audio.samples) + encoder.flush()


SOURCE = wav(buzz(150.0, SOURCE_S))
TARGET = wav(buzz(220.0, SOURCE_S))


def job() -> ConversionJob:
    return ConversionJob(source=Upload(SOURCE), target=Upload(TARGET), response_format="wav")


async def convert(service: ConversionService, trace: RequestTrace) -> bytes:
    return await (await service.open(job(), trace)).body()


async def until(event: threading.Event) -> None:
    """Wait for `event` without a thread of the default executor (some tests leave it only one)."""
    for _ in range(WAIT_S * 100):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the event never came")


async def drain(pool: ConversionPool) -> None:
    """Return once everything the one-thread pool was given before has finished."""
    await pool.run(Cancellation.after(WAIT_S), lambda: None)


def expiring_trace(settings: Settings, left_s: float) -> RequestTrace:
    """A request that arrived so long ago that `left_s` of its time remains."""
    return RequestTrace(started_at=time.perf_counter() - settings.request_timeout_s + left_s)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return library_settings(tmp_path, conversion_window_s=WINDOW_S, crossfade_ms=0)


@pytest.fixture
def engine() -> BuzzEngine:
    return BuzzEngine()


@pytest.fixture
def converter() -> GatedConverter:
    return GatedConverter()


@pytest.fixture
def pool() -> ConversionPool:
    return ConversionPool(ConversionPoolOptions(conversion_threads=1, max_concurrent_conversions=2))


@pytest.fixture
def service(
    engine: BuzzEngine, scheduler: Scheduler, settings: Settings, converter: GatedConverter, pool: ConversionPool
) -> Iterator[ConversionService]:
    library = VoiceLibrary(
        VoiceStore(settings.data_dir), VoiceRegistry([engine], {}, LOW.id), library_options(settings), scheduler
    )
    fetcher = UrlFetcher(FetchOptions(max_bytes=settings.max_upload_bytes, timeout_s=5))
    service = ConversionService(library, converter, fetcher, conversion_options(settings), pool=pool)
    yield service
    converter.gate.set()
    engine.gate.set()
    asyncio.run(service.close())
    library.close()


def test_conversions_beyond_the_limit_get_429_while_the_limits_worth_run(
    service: ConversionService, converter: GatedConverter, pool: ConversionPool
) -> None:
    async def scenario() -> list[bytes]:
        converter.gate.clear()
        streams = [await service.open(job(), RequestTrace()) for _ in range(2)]
        bodies = [asyncio.create_task(stream.body()) for stream in streams]
        await until(converter.started)
        with pytest.raises(QueueFullError) as refused:
            await service.open(job(), RequestTrace())
        assert refused.value.retry_after_s >= 1
        assert refused.value.headers() == {"Retry-After": str(refused.value.retry_after_s)}
        with pytest.raises(QueueFullError):  # registrations share the limit
            await service.register_voice(VoiceRegistration("later", Upload(TARGET)), RequestTrace())
        converter.gate.set()
        converted = await asyncio.gather(*bodies)
        assert pool.in_progress() == 0
        await (await service.open(job(), RequestTrace())).body()  # the slots came back
        return converted

    for body in asyncio.run(scenario()):
        assert len(decode_audio(body).samples) == round(SOURCE_S * RATE)
    assert len(converter.windows) == 3 * WINDOWS


def test_a_conversion_past_its_deadline_gets_504_and_stops_at_the_next_window(
    service: ConversionService, converter: GatedConverter, pool: ConversionPool, settings: Settings
) -> None:
    async def scenario() -> None:
        converter.gate.clear()  # the first window cannot finish before the deadline
        with pytest.raises(DeadlineExceededError):
            await convert(service, expiring_trace(settings, left_s=1.0))
        assert pool.in_progress() == 0
        converter.gate.set()
        await drain(pool)

    asyncio.run(scenario())
    assert len(converter.windows) <= 1  # at most the window running when time ran out; none after it


def test_a_client_that_leaves_stops_the_conversion_at_the_next_window(
    service: ConversionService, converter: GatedConverter, pool: ConversionPool
) -> None:
    async def scenario() -> None:
        stream = await service.open(job(), RequestTrace())
        converter.gate.clear()
        reading = asyncio.create_task(stream.body())
        await until(converter.started)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert pool.in_progress() == 0
        converter.gate.set()
        await drain(pool)

    asyncio.run(scenario())
    assert len(converter.windows) == 1


def test_speech_is_served_while_conversions_hold_every_conversion_thread(
    service: ConversionService, converter: GatedConverter, engine: BuzzEngine, scheduler: Scheduler,
    settings: Settings,
) -> None:  # fmt: skip
    speech = SpeechService(VoiceRegistry([engine], {}, LOW.id), scheduler, speech_options(settings))

    async def scenario() -> bytes:
        # Speech phonemizes and encodes on the default executor: with one thread there, a conversion that ran
        # on it would stall every speech request.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
        streams = [await service.open(job(), RequestTrace()) for _ in range(2)]
        converter.gate.clear()
        bodies = [asyncio.create_task(stream.body()) for stream in streams]
        await until(converter.started)
        spoken = speech.open(SpeechJob(text="Hello there. How are you today?", voice=LOW.id, response_format="wav"))
        body = await asyncio.wait_for(spoken.body(), WAIT_S)
        assert converter.windows == []  # served while the conversions' windows were held at the gate
        assert not any(task.done() for task in bodies)
        converter.gate.set()
        await asyncio.gather(*bodies)
        return body

    spoken = decode_audio(asyncio.run(scenario()))
    assert spoken.duration_s > 0.5
    assert converter.windows
    assert all(thread.startswith(THREAD_PREFIX) for thread in converter.windows)


def test_registration_is_admitted_and_profiles_base_voices_on_the_scheduler(
    service: ConversionService, engine: BuzzEngine, metrics: Metrics, settings: Settings, pool: ConversionPool
) -> None:
    registration = VoiceRegistration("singer", Upload(wav(buzz(200.0, SOURCE_S))))
    voice = asyncio.run(service.register_voice(registration, RequestTrace()))
    assert voice.base_voice == HIGH.id
    assert engine_items(metrics) == 2 * len(profile_texts(settings))
    assert all(thread.startswith("voxserve-worker") for thread in engine.threads)
    assert pool.in_progress() == 0


def test_a_conversion_to_a_builtin_voice_profiles_it_on_the_scheduler(
    service: ConversionService, engine: BuzzEngine, metrics: Metrics, settings: Settings
) -> None:
    async def scenario() -> bytes:
        stream = await service.open(
            ConversionJob(source=Upload(SOURCE), voice=LOW.id, response_format="wav"), RequestTrace()
        )
        return await stream.body()

    assert len(decode_audio(asyncio.run(scenario())).samples) == round(SOURCE_S * RATE)
    assert engine_items(metrics) == len(profile_texts(settings))


def test_a_registration_past_its_deadline_gets_504_and_stores_nothing(
    service: ConversionService, engine: BuzzEngine, scheduler: Scheduler, pool: ConversionPool, settings: Settings
) -> None:
    async def scenario() -> None:
        engine.gate.clear()  # base-voice profiling cannot finish before the deadline
        registration = VoiceRegistration("late", Upload(wav(buzz(200.0, SOURCE_S))))
        with pytest.raises(DeadlineExceededError):
            await service.register_voice(registration, expiring_trace(settings, left_s=1.0))
        assert pool.in_progress() == 0
        engine.gate.set()
        await drain(pool)

    asyncio.run(scenario())
    scheduler.close()  # runs whatever is still queued: none of the registration's profile
    assert len(engine.ran) <= 1
    assert service.library.list(Caller()) == []
