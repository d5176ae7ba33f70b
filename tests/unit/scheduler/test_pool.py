from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import FAKE_VOICE, FakeEngine
from voxserve.engines.base import PreparedSegment
from voxserve.errors import EngineError
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.pool import Priority, Scheduler
from voxserve.types import SynthesisParams


def segment(text: str) -> PreparedSegment:
    return PreparedSegment(SynthesisParams(text=text, voice=FAKE_VOICE))


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    pool = Scheduler(workers=1)
    yield pool
    pool.close()


def test_returns_each_segments_audio(scheduler: Scheduler) -> None:
    engine = FakeEngine()
    futures = [scheduler.submit(engine, segment(t), RequestTrace(), Priority.LATER_SEGMENT) for t in ("ab", "abcd")]
    assert [len(future.result(timeout=5)) for future in futures] == [2, 4]


def test_first_segments_overtake_queued_later_segments(scheduler: Scheduler) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    trace = RequestTrace()
    blocker = scheduler.submit(engine, segment("blocker"), trace, Priority.LATER_SEGMENT)
    assert engine.started.wait(5)
    later = [scheduler.submit(engine, segment(f"later{n}"), trace, Priority.LATER_SEGMENT) for n in range(3)]
    first = scheduler.submit(engine, segment("first"), trace, Priority.FIRST_SEGMENT)
    engine.gate.set()
    for future in [blocker, *later, first]:
        future.result(timeout=5)
    assert engine.ran == ["blocker", "first", "later0", "later1", "later2"]


def test_cancelled_segments_cost_no_engine_time(scheduler: Scheduler) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    trace = RequestTrace()
    running = scheduler.submit(engine, segment("running"), trace, Priority.FIRST_SEGMENT)
    assert engine.started.wait(5)
    dropped = scheduler.submit(engine, segment("dropped"), trace, Priority.LATER_SEGMENT)
    assert dropped.cancel()
    engine.gate.set()
    running.result(timeout=5)
    scheduler.submit(engine, segment("after"), trace, Priority.LATER_SEGMENT).result(timeout=5)
    assert engine.ran == ["running", "after"]


def test_engine_failure_becomes_an_engine_error_and_workers_survive(scheduler: Scheduler) -> None:
    engine = FakeEngine()
    failed = scheduler.submit(engine, segment("fail"), RequestTrace(), Priority.FIRST_SEGMENT)
    with pytest.raises(EngineError):
        failed.result(timeout=5)
    assert len(scheduler.submit(engine, segment("ok"), RequestTrace(), Priority.FIRST_SEGMENT).result(timeout=5)) == 2


def test_trace_records_queue_wait_and_model_time(scheduler: Scheduler) -> None:
    trace = RequestTrace()
    scheduler.submit(FakeEngine(), segment("abc"), trace, Priority.FIRST_SEGMENT).result(timeout=5)
    assert {"queue", "model"} <= set(trace.stages())


def test_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Scheduler(workers=0)
