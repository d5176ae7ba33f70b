"""The voice library profiles built-in voices through the shared scheduler (never by calling an engine itself),
one profile per voice however many callers ask, and a registration whose request stops stores nothing."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.unit.service.buzz import (
    HIGH,
    LOW,
    WAIT_S,
    BuzzEngine,
    WatchedCancellation,
    buzz,
    engine_items,
    library_settings,
    profile_texts,
)
from voxserve.conversion.cancellation import Cancellation
from voxserve.errors import ClientDisconnectedError, DeadlineExceededError, QueueFullError
from voxserve.obs.metrics import Metrics
from voxserve.scheduler.pool import Scheduler, SchedulerOptions
from voxserve.service.bootstrap import library_options
from voxserve.service.voice_library import VoiceLibrary
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import Settings
from voxserve.storage.voices import VoiceStore
from voxserve.types import Caller


@pytest.fixture
def engine() -> BuzzEngine:
    return BuzzEngine()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return library_settings(tmp_path)


@pytest.fixture
def library(engine: BuzzEngine, scheduler: Scheduler, settings: Settings) -> Iterator[VoiceLibrary]:
    library = VoiceLibrary(
        VoiceStore(settings.data_dir), VoiceRegistry([engine], {}, LOW.id), library_options(settings), scheduler
    )
    yield library
    engine.gate.set()
    library.close()


def test_a_builtin_voice_is_profiled_on_the_schedulers_workers(
    library: VoiceLibrary, engine: BuzzEngine, metrics: Metrics, settings: Settings
) -> None:
    features = library.builtin_features(HIGH)
    assert features.f0_median_hz == pytest.approx(220.0, rel=0.05)
    texts = profile_texts(settings)
    assert engine.ran == texts
    assert engine_items(metrics) == len(texts)
    assert all(thread.startswith("voxserve-worker") for thread in engine.threads)
    assert library.builtin_features(HIGH) is features  # cached: the scheduler sees no more work
    assert engine_items(metrics) == len(texts)


def test_registration_profiles_its_base_voices_through_the_scheduler(
    library: VoiceLibrary, engine: BuzzEngine, metrics: Metrics, settings: Settings
) -> None:
    voice = library.register("singer", buzz(200.0, 2.0))
    assert voice.base_voice == HIGH.id  # the built-in voice closest in pitch
    texts = profile_texts(settings)
    assert sorted(engine.ran) == sorted(texts * 2)  # both candidate voices, each profiled once
    assert engine_items(metrics) == 2 * len(texts)
    assert all(thread.startswith("voxserve-worker") for thread in engine.threads)
    assert [stored.name for stored in library.list(Caller())] == ["singer"]


def test_one_profile_per_voice_however_many_callers_ask(
    library: VoiceLibrary, engine: BuzzEngine, settings: Settings
) -> None:
    engine.gate.clear()
    follower = WatchedCancellation(time.perf_counter() + 60)
    with ThreadPoolExecutor(2) as callers:
        leading = callers.submit(library.builtin_features, LOW)
        assert engine.started.wait(WAIT_S)
        following = callers.submit(library.builtin_features, LOW, follower)
        assert follower.waiting.wait(WAIT_S)
        engine.gate.set()
        assert following.result(WAIT_S) is leading.result(WAIT_S)
    assert engine.ran == profile_texts(settings)


def test_a_caller_leads_the_profile_again_when_the_leader_gives_up(
    library: VoiceLibrary, engine: BuzzEngine, settings: Settings
) -> None:
    engine.gate.clear()
    leader = Cancellation(time.perf_counter() + 60)
    follower = WatchedCancellation(time.perf_counter() + 60)
    with ThreadPoolExecutor(2) as callers:
        leading = callers.submit(library.builtin_features, LOW, leader)
        assert engine.started.wait(WAIT_S)
        following = callers.submit(library.builtin_features, LOW, follower)
        assert follower.waiting.wait(WAIT_S)
        leader.cancel()  # the leader's client left while its first segment was on the engine
        with pytest.raises(ClientDisconnectedError):
            leading.result(WAIT_S)
        engine.gate.set()
        assert following.result(WAIT_S).f0_median_hz == pytest.approx(110.0, rel=0.05)
    texts = profile_texts(settings)
    # The leader's queued segments were withdrawn; only the one already running ran for it.
    assert engine.ran == [texts[0], *texts]


def test_a_registration_stopped_while_profiling_stores_nothing_and_withdraws_its_segments(
    library: VoiceLibrary, engine: BuzzEngine, scheduler: Scheduler
) -> None:
    engine.gate.clear()
    cancellation = Cancellation(time.perf_counter() + 60)
    with ThreadPoolExecutor(1) as caller:
        registering = caller.submit(library.register, "late", buzz(200.0, 2.0), cancellation=cancellation)
        assert engine.started.wait(WAIT_S)
        cancellation.cancel(DeadlineExceededError, "the request passed its deadline")
        with pytest.raises(DeadlineExceededError):
            registering.result(WAIT_S)
    engine.gate.set()
    scheduler.close()  # runs what is still queued: nothing of the registration's
    assert len(engine.ran) == 1
    assert library.list(Caller()) == []
    assert library.find("late", Caller()) is None


def test_cancellation_commits_once_and_then_cannot_be_cancelled() -> None:
    committed = Cancellation(time.perf_counter() + 60)
    committed.commit()
    assert committed.cancel() is False
    committed.check()  # no error: the work's effect is final
    cancelled = Cancellation(time.perf_counter() + 60)
    assert cancelled.cancel() is True
    with pytest.raises(ClientDisconnectedError):
        cancelled.commit()
    expired = Cancellation(time.perf_counter() - 1)
    assert expired.cancelled
    with pytest.raises(DeadlineExceededError):
        expired.wait(Future())


def test_a_profile_is_admitted_like_a_request_and_refused_when_the_queue_is_full(
    engine: BuzzEngine, metrics: Metrics, settings: Settings
) -> None:
    scheduler = Scheduler(SchedulerOptions(workers=1, max_queue_size=len(profile_texts(settings))), metrics)
    library = VoiceLibrary(
        VoiceStore(settings.data_dir), VoiceRegistry([engine], {}, LOW.id), library_options(settings), scheduler
    )
    try:
        # Another request holds room, so the profile's segments no longer fit.
        with scheduler.admit(1), pytest.raises(QueueFullError):
            library.builtin_features(HIGH)
        assert engine.ran == []
        assert library.builtin_features(HIGH).f0_median_hz == pytest.approx(220.0, rel=0.05)
    finally:
        scheduler.close()
        library.close()


def test_preload_skips_a_voice_it_cannot_load_and_loads_the_rest(
    library: VoiceLibrary, engine: BuzzEngine, scheduler: Scheduler, settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    broken = library.register("broken", buzz(200.0, 2.0))
    kept = library.register("kept", buzz(120.0, 2.0))
    shutil.rmtree(library.store.directory / broken.id)  # its files are gone; its row is still there
    preloading = settings.model_copy(update={"voice_preload": ["missing", "broken", "kept"]})
    restarted = VoiceLibrary(library.store, VoiceRegistry([engine], {}, LOW.id), library_options(preloading), scheduler)
    with caplog.at_level(logging.WARNING, logger="voxserve.service.voice_library"):
        restarted.preload()
    assert "'missing', which is not a custom voice" in caplog.text
    assert f"voice 'broken' ({broken.id}) could not be loaded" in caplog.text
    assert restarted.stats().entries == 2  # kept's features and its base voice's profile
    assert restarted.features(kept).f0_median_hz == pytest.approx(120.0, rel=0.05)
    assert restarted.stats().hits == 1
