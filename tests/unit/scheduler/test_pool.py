from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future

import numpy as np
import pytest

from tests.fakes import FAKE_VOICE, FakeEngine
from voxserve.engines.base import PreparedSegment
from voxserve.errors import DeadlineExceededError, EngineError, QueueFullError
from voxserve.obs.metrics import Metrics
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.pool import Priority, Scheduler, SchedulerOptions
from voxserve.types import SynthesisParams


def submit(
    scheduler: Scheduler, engine: FakeEngine, text: str, priority: Priority = Priority.LATER_SEGMENT,
    due: float = 0.0, deadline_s: float = 60.0, trace: RequestTrace | None = None,
) -> Future[np.ndarray]:  # fmt: skip
    segment = PreparedSegment(SynthesisParams(text=text, voice=FAKE_VOICE))
    deadline = time.perf_counter() + deadline_s
    return scheduler.submit(engine, segment, trace or RequestTrace(), priority=priority, due=due, deadline=deadline)


def held(scheduler: Scheduler, engine: FakeEngine) -> Future[np.ndarray]:
    """Occupy the only worker until `engine.gate` is set, so what is submitted next queues up."""
    engine.gate.clear()
    blocker = submit(scheduler, engine, "blocker")
    assert engine.started.wait(5)
    return blocker


def count(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def scheduler(metrics: Metrics) -> Iterator[Scheduler]:
    pool = Scheduler(SchedulerOptions(workers=1, max_queue_size=3), metrics)
    yield pool
    pool.close()


def test_returns_each_segments_audio(scheduler: Scheduler) -> None:
    engine = FakeEngine()
    futures = [submit(scheduler, engine, text) for text in ("ab", "abcd")]
    assert [len(future.result(timeout=5)) for future in futures] == [2, 4]


def test_first_segments_overtake_later_ones_which_run_by_due_time(scheduler: Scheduler) -> None:
    engine = FakeEngine()
    blocker = held(scheduler, engine)
    futures = [submit(scheduler, engine, f"due{due}", due=due) for due in (3.0, 1.0, 2.0)]
    futures.append(submit(scheduler, engine, "first", Priority.FIRST_SEGMENT, due=9.0))
    engine.gate.set()
    for future in [blocker, *futures]:
        future.result(timeout=5)
    assert engine.ran == ["blocker", "first", "due1.0", "due2.0", "due3.0"]


def test_cancelled_segments_cost_no_engine_time(scheduler: Scheduler, metrics: Metrics) -> None:
    engine = FakeEngine()
    blocker = held(scheduler, engine)
    dropped = submit(scheduler, engine, "dropped")
    assert dropped.cancel()
    engine.gate.set()
    blocker.result(timeout=5)
    submit(scheduler, engine, "after").result(timeout=5)
    assert engine.ran == ["blocker", "after"]
    assert count(metrics, "voxserve_segments_cancelled_total") == 1


def test_segments_past_their_deadline_are_dropped_unrun(scheduler: Scheduler, metrics: Metrics) -> None:
    engine = FakeEngine()
    blocker = held(scheduler, engine)
    late = submit(scheduler, engine, "late", deadline_s=0.01)
    time.sleep(0.05)
    engine.gate.set()
    blocker.result(timeout=5)
    with pytest.raises(DeadlineExceededError):
        late.result(timeout=5)
    assert "late" not in engine.ran
    assert count(metrics, "voxserve_segments_expired_total") == 1


def test_engine_failure_becomes_an_engine_error_and_workers_survive(scheduler: Scheduler) -> None:
    engine = FakeEngine()
    with pytest.raises(EngineError):
        submit(scheduler, engine, "fail").result(timeout=5)
    assert len(submit(scheduler, engine, "ok").result(timeout=5)) == 2


def test_admission_refuses_when_full_and_recovers(scheduler: Scheduler, metrics: Metrics) -> None:
    engine = FakeEngine()
    scheduler.admit(50)  # an empty queue admits anything
    blocker = held(scheduler, engine)
    queued = [submit(scheduler, engine, f"q{n}") for n in range(3)]
    with pytest.raises(QueueFullError) as refused:
        scheduler.admit(1)
    assert refused.value.status_code == 429
    assert int(refused.value.headers()["Retry-After"]) >= 1
    assert count(metrics, "voxserve_requests_rejected_total") == 1
    engine.gate.set()
    for future in [blocker, *queued]:
        future.result(timeout=5)
    scheduler.admit(3)


def test_a_lone_segment_runs_solo_and_later_segments_wait_for_it(metrics: Metrics) -> None:
    engine = FakeEngine()
    pool = Scheduler(SchedulerOptions(workers=2), metrics)
    try:
        engine.gate.clear()
        alone = submit(pool, engine, "alone")
        assert engine.started.wait(5)
        later = submit(pool, engine, "later")
        time.sleep(0.1)
        assert engine.ran == []  # "later" waits rather than share the cores "alone" is using
        engine.gate.set()
        alone.result(timeout=5)
        later.result(timeout=5)
    finally:
        pool.close()
    assert engine.ran == ["alone", "later"]
    assert engine.solo == [True, True]


def test_another_requests_first_segment_runs_beside_a_solo_one(metrics: Metrics) -> None:
    engine = FakeEngine()
    pool = Scheduler(SchedulerOptions(workers=2), metrics)
    try:
        engine.gate.clear()
        alone = submit(pool, engine, "alone")
        assert engine.started.wait(5)
        engine.started.clear()
        first = submit(pool, engine, "first", Priority.FIRST_SEGMENT)
        assert engine.started.wait(5)  # taken by the second worker while "alone" still runs
        engine.gate.set()
        alone.result(timeout=5)
        first.result(timeout=5)
    finally:
        pool.close()
    assert sorted(engine.solo) == [False, True]


@pytest.mark.parametrize(("same_request", "expected_solo"), [(True, [True, True, True]), (False, [False, False])])
def test_one_requests_segments_run_one_at_a_time_on_every_core(
    metrics: Metrics, same_request: bool, expected_solo: list[bool]
) -> None:
    engine = FakeEngine()
    pool = Scheduler(SchedulerOptions(workers=2), metrics)
    trace = RequestTrace()
    try:
        engine.gate.clear()
        # Separate requests: another request already holds one worker, so whichever segment the other worker
        # takes first still sees the machine shared (without it, s0 could be taken alone before s1 arrived).
        futures = [] if same_request else [submit(pool, engine, "other request")]
        futures += [
            submit(pool, engine, f"s{n}", Priority.LATER_SEGMENT if n and same_request else Priority.FIRST_SEGMENT,
                   due=n, trace=trace if same_request else None)
            for n in range(3)
        ]  # fmt: skip
        time.sleep(0.1)
        engine.gate.set()
        for future in futures:
            future.result(timeout=5)
    finally:
        pool.close()
    # One request: each segment sees only its own request waiting, so all run solo (sequentially).
    # Several requests: the first two start side by side on one core each.
    assert [engine.solo_by_text[f"s{n}"] for n in range(len(expected_solo))] == expected_solo


def test_batching_groups_same_voice_similar_lengths(metrics: Metrics) -> None:
    engine = FakeEngine(supports_batching=True)
    pool = Scheduler(SchedulerOptions(workers=1, max_batch_size=3, max_queue_delay_ms=20), metrics)
    try:
        blocker = held(pool, engine)
        similar = [submit(pool, engine, f"text {n}") for n in range(4)]
        different = submit(pool, engine, "a much, much longer text than the others")
        engine.gate.set()
        outputs = [future.result(timeout=5) for future in [blocker, *similar, different]]
    finally:
        pool.close()
    assert [len(output) for output in outputs[1:5]] == [6, 6, 6, 6]
    assert engine.batches[1] == ["text 0", "text 1", "text 2"]
    assert ["a much, much longer text than the others"] in engine.batches
    items = metrics.registry.get_sample_value("voxserve_engine_items_total", {"engine": "fake"})
    executions = metrics.registry.get_sample_value("voxserve_engine_executions_total", {"engine": "fake"})
    assert (items, executions) == (6, len(engine.batches))


def test_options_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        SchedulerOptions(workers=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        SchedulerOptions(max_batch_size=0)
