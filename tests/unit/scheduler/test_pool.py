from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from tests.fakes import FAKE_VOICE, FakeEngine
from voxserve.engines.base import PreparedSegment, SegmentAudio
from voxserve.errors import DeadlineExceededError, EngineError, QueueFullError
from voxserve.obs.metrics import Metrics
from voxserve.obs.trace import RequestTrace
from voxserve.process import BackgroundPriority
from voxserve.scheduler.pool import Priority, Reservation, Scheduler, SchedulerOptions
from voxserve.types import SPOKEN_S_PER_CHAR, SynthesisParams


def submit(
    scheduler: Scheduler, engine: FakeEngine, text: str, priority: Priority = Priority.LATER_SEGMENT,
    due: float = 0.0, deadline_s: float = 60.0, trace: RequestTrace | None = None,
    reservation: Reservation | None = None,
) -> Future[SegmentAudio]:  # fmt: skip
    segment = PreparedSegment(SynthesisParams(text=text, voice=FAKE_VOICE))
    deadline = time.perf_counter() + deadline_s
    return scheduler.submit(
        engine, segment, trace or RequestTrace(), priority=priority, due=due, deadline=deadline,
        reservation=reservation,
    )  # fmt: skip


def held(scheduler: Scheduler, engine: FakeEngine) -> Future[SegmentAudio]:
    """Occupy the only worker until `engine.gate` is set, so what is submitted next queues up."""
    engine.gate.clear()
    blocker = submit(scheduler, engine, "blocker")
    assert engine.started.wait(5)
    return blocker


def count(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for the workers to reach a state; the timeout is only a safety net."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the workers did not get there"
        time.sleep(0.001)


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
    assert [len(future.result(timeout=5).samples) for future in futures] == [2, 4]


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
    late = submit(scheduler, engine, "late", deadline_s=-1.0)
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
    assert len(submit(scheduler, engine, "ok").result(timeout=5).samples) == 2


def test_an_engine_failing_every_call_fails_requests_cleanly_until_it_recovers(
    scheduler: Scheduler, metrics: Metrics
) -> None:
    engine = FakeEngine()
    engine.failure = RuntimeError("device lost")
    for n in range(5):
        with pytest.raises(EngineError, match="device lost") as failed:
            submit(scheduler, engine, f"try {n}").result(timeout=5)
        assert failed.value.code == "engine_error"
    engine.failure = None
    assert len(submit(scheduler, engine, "back").result(timeout=5).samples) == 4
    assert count(metrics, "voxserve_engine_failures_total", {"engine": "fake"}) == 5


class MisshapenEngine(FakeEngine):
    """Returns whatever `shape` makes of the right outputs."""

    def __init__(self, shape: Callable[[list[SegmentAudio]], object]) -> None:
        super().__init__(supports_batching=True)
        self.shape = shape

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        return self.shape(super().run(batch, solo=solo))  # type: ignore[return-value]


@pytest.mark.parametrize(
    "shape",
    [lambda outputs: outputs[:-1], lambda outputs: [*outputs, outputs[0]], lambda outputs: None],
    ids=["too-few", "too-many", "none"],
)
def test_an_engine_returning_the_wrong_outputs_fails_the_batch_and_the_worker_goes_on(
    metrics: Metrics, shape: Callable[[list[SegmentAudio]], object]
) -> None:
    engine = MisshapenEngine(shape)
    pool = Scheduler(SchedulerOptions(workers=1, max_batch_size=2), metrics)
    try:
        blocker = held(pool, engine)
        pair = [submit(pool, engine, f"pair {n}") for n in range(2)]
        engine.gate.set()
        for future in [blocker, *pair]:
            with pytest.raises(EngineError, match="engine fake"):
                future.result(timeout=5)
        assert engine.batches == [["blocker"], ["pair 0", "pair 1"]]  # the pair really was one call
        assert len(submit(pool, FakeEngine(), "next").result(timeout=5).samples) == 4
    finally:
        pool.close()


@pytest.mark.parametrize("text", ["ok", "fail"])
def test_a_worker_survives_a_future_settled_while_its_segment_runs(scheduler: Scheduler, text: str) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    running = submit(scheduler, engine, text)
    assert engine.started.wait(5)
    settled = np.zeros(1, dtype=np.float32)
    running.set_result(settled)  # someone else settles it while the engine works on it
    engine.gate.set()
    assert len(submit(scheduler, engine, "next").result(timeout=5).samples) == 4
    assert running.result() is settled


class CancelledAfterALook(Future):
    """A future its client cancels just after a worker first looks at it: the race between a check and a settle."""

    def cancelled(self) -> bool:
        looked = super().cancelled()
        self.cancel()
        return looked

    def set_running_or_notify_cancel(self) -> bool:
        running = super().set_running_or_notify_cancel()
        self.cancel()
        return running


def test_a_worker_survives_a_cancel_landing_between_its_check_and_its_settle(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    blocker = held(scheduler, engine)
    with monkeypatch.context() as patched:
        patched.setattr("voxserve.scheduler.pool.Future", CancelledAfterALook)
        expired = submit(scheduler, engine, "expired", deadline_s=-1.0)
        racing = submit(scheduler, engine, "racing")
    engine.gate.set()
    blocker.result(timeout=5)
    assert len(submit(scheduler, engine, "next").result(timeout=5).samples) == 4
    with pytest.raises(DeadlineExceededError):
        expired.result(timeout=5)
    assert len(racing.result(timeout=5).samples) == 6  # the cancel came once it was running: too late to take effect


def test_admission_counts_queued_and_held_segments_and_recovers(scheduler: Scheduler, metrics: Metrics) -> None:
    engine = FakeEngine()
    scheduler.admit(50).close()  # an idle queue admits anything; closing gives the room back
    blocker = held(scheduler, engine)
    reservation = scheduler.admit(2)  # room held for segments still being prepared
    queued = submit(scheduler, engine, "queued")
    with pytest.raises(QueueFullError) as refused:
        scheduler.admit(1)  # 2 held + 1 queued fill the queue of 3
    assert refused.value.status_code == 429
    assert int(refused.value.headers()["Retry-After"]) >= 1
    assert count(metrics, "voxserve_requests_rejected_total") == 1
    filled = submit(scheduler, engine, "filled", reservation=reservation)
    with pytest.raises(QueueFullError):
        scheduler.admit(1)  # a held place that is filled stays taken
    reservation.close()
    assert filled.cancelled()
    scheduler.admit(1).close()  # the place never filled came back
    engine.gate.set()
    for future in (blocker, queued):
        future.result(timeout=5)
    scheduler.admit(3).close()


@pytest.mark.parametrize(("segments", "admitted"), [(2, 3), (4, 1), (20, 1)])
def test_admission_is_exact_however_many_requests_race(metrics: Metrics, segments: int, admitted: int) -> None:
    """Five requests admit and submit at once against a queue of 6 while the worker is held: requests are
    admitted while their segments fit (one larger than the queue only while the queue is idle), the rest refused."""
    engine = FakeEngine()
    pool = Scheduler(SchedulerOptions(workers=1, max_queue_size=6), metrics)
    start = threading.Barrier(5)

    def request(_: int) -> list[Future[SegmentAudio]] | None:
        start.wait(timeout=5)
        try:
            reservation = pool.admit(segments)
        except QueueFullError:
            return None
        return [submit(pool, engine, f"s{n}", reservation=reservation) for n in range(segments)]

    try:
        blocker = held(pool, engine)
        with ThreadPoolExecutor(5) as clients:
            results = list(clients.map(request, range(5)))
        accepted = [futures for futures in results if futures is not None]
        assert len(accepted) == admitted
        assert count(metrics, "voxserve_requests_rejected_total") == 5 - admitted
        assert pool.queue_depth() == admitted * segments <= max(6, segments)  # nothing has left the queue yet
        engine.gate.set()
        for future in [blocker, *(future for futures in accepted for future in futures)]:
            future.result(timeout=5)
    finally:
        pool.close()


def test_closing_a_reservation_cancels_its_queued_segments_and_refuses_more(
    scheduler: Scheduler, metrics: Metrics
) -> None:
    engine = FakeEngine()
    blocker = held(scheduler, engine)
    reservation = scheduler.admit(3)
    queued = [submit(scheduler, engine, f"queued {n}", reservation=reservation) for n in range(2)]
    reservation.close()
    late = submit(scheduler, engine, "late", reservation=reservation)
    assert all(future.cancelled() for future in [*queued, late])
    # Out of the queue at once, while the worker is still busy: a hung-up request holds no room ("late" never
    # queued), so a request as large as the whole queue is admitted.
    assert scheduler.queue_depth() == 0
    assert count(metrics, "voxserve_segments_cancelled_total") == 2
    scheduler.admit(3).close()
    engine.gate.set()
    blocker.result(timeout=5)
    submit(scheduler, engine, "after").result(timeout=5)
    assert engine.ran == ["blocker", "after"]
    assert count(metrics, "voxserve_segments_cancelled_total") == 2


def test_a_hung_up_requests_segments_leave_the_queue_before_any_worker_reaches_them(
    scheduler: Scheduler, metrics: Metrics
) -> None:
    engine = FakeEngine()
    blocker = held(scheduler, engine)
    first = submit(scheduler, engine, "queued 0")
    reservation = scheduler.admit(1)
    gone = submit(scheduler, engine, "queued 1", due=1.0, reservation=reservation)
    assert scheduler.queue_depth() == 2
    reservation.close()
    assert gone.cancelled()
    assert scheduler.queue_depth() == 1
    assert scheduler.pending_audio_s() == pytest.approx(len("queued 0") * SPOKEN_S_PER_CHAR)
    engine.gate.set()
    for future in (blocker, first):
        future.result(timeout=5)
    assert engine.ran == ["blocker", "queued 0"]
    assert count(metrics, "voxserve_segments_cancelled_total") == 1


def test_a_lone_segment_runs_solo_and_later_segments_wait_for_it(metrics: Metrics) -> None:
    engine = FakeEngine()
    finished_at_start: dict[str, list[str]] = {}
    engine.on_run = lambda texts: finished_at_start.setdefault(texts[0], list(engine.ran))
    pool = Scheduler(SchedulerOptions(workers=2), metrics)
    try:
        engine.gate.clear()
        alone = submit(pool, engine, "alone")
        assert engine.started.wait(5)
        later = submit(pool, engine, "later")
        wait_until(lambda: pool.queue_depth() == 0)  # the idle second worker has taken "later"
        engine.gate.set()
        alone.result(timeout=5)
        later.result(timeout=5)
    finally:
        pool.close()
    # "later" started only once "alone" had finished, rather than share the cores "alone" was using.
    assert finished_at_start == {"alone": [], "later": ["alone"]}
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
        wait_until(lambda: pool.queue_depth() == len(futures) - 2)  # each worker holds a segment at the gate
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
    assert [len(output.samples) for output in outputs[1:5]] == [6, 6, 6, 6]
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


def test_the_express_worker_runs_a_first_segment_while_every_worker_is_busy(metrics: Metrics) -> None:
    engine, hold = FakeEngine(), threading.Event()
    engine.on_run = lambda texts: hold.wait(5) if texts == ["long"] else None
    pool = Scheduler(SchedulerOptions(workers=1, express_worker=True), metrics)
    try:
        long = submit(pool, engine, "long")  # the only regular worker is on it
        wait_until(lambda: pool.queue_depth() == 0)
        later = submit(pool, engine, "later")  # waits: the express worker takes first segments only
        first = submit(pool, engine, "first", Priority.FIRST_SEGMENT)
        first.result(timeout=5)
        assert engine.ran == ["first"]
        assert pool.queue_depth() == 1
        hold.set()
        long.result(timeout=5)
        later.result(timeout=5)
    finally:
        hold.set()
        pool.close()
    assert engine.ran == ["first", "long", "later"]
    assert pool.workers == 1  # the express worker is not one of the workers that take anything
    assert engine.solo_by_text["first"]  # on every core, beside a busy worker


def test_work_goes_on_beside_the_express_workers_first_segment(metrics: Metrics) -> None:
    engine, entered = FakeEngine(), threading.Event()
    holds = {"long": threading.Event(), "first": threading.Event()}

    def on_run(texts: list[str]) -> None:
        if texts[0] in holds:
            entered.set()
            holds[texts[0]].wait(5)

    engine.on_run = on_run
    pool = Scheduler(SchedulerOptions(workers=1, express_worker=True), metrics)
    try:
        long = submit(pool, engine, "long")
        assert entered.wait(5)  # the regular worker holds it, so the express worker takes the next first segment
        entered.clear()
        first = submit(pool, engine, "first", Priority.FIRST_SEGMENT)
        assert entered.wait(5)
        holds["long"].set()
        long.result(timeout=5)
        submit(pool, engine, "later").result(timeout=5)  # not held back by the wide first segment
        assert not first.done()
        holds["first"].set()
        first.result(timeout=5)
    finally:
        for hold in holds.values():
            hold.set()
        pool.close()
    assert engine.solo_by_text == {"long": True, "first": True, "later": False}


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_workers_run_below_the_express_worker_and_the_rest_of_the_server(metrics: Metrics) -> None:
    engine, hold, niceness = FakeEngine(), threading.Event(), {}

    def on_run(texts: list[str]) -> None:
        niceness[texts[0]] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        if texts == ["long"]:
            hold.wait(5)

    engine.on_run = on_run
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pool = Scheduler(SchedulerOptions(workers=1, express_worker=True, worker_niceness=5), metrics)
    try:
        long = submit(pool, engine, "long")
        wait_until(lambda: pool.queue_depth() == 0)  # on the regular worker
        submit(pool, engine, "first", Priority.FIRST_SEGMENT).result(timeout=5)
        hold.set()
        long.result(timeout=5)
    finally:
        hold.set()
        pool.close()
    assert niceness == {"long": min(caller + 5, 19), "first": caller}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread scheduling classes are Linux's")
@pytest.mark.parametrize("priority", list(BackgroundPriority))
def test_background_segments_run_below_live_ones_and_the_workers_keep_their_priority(
    metrics: Metrics, priority: BackgroundPriority
) -> None:
    engine, placed, threads = FakeEngine(), {}, {}

    def on_run(texts: list[str]) -> None:
        thread = threading.get_native_id()
        placed[texts[0]] = (os.sched_getscheduler(thread), os.getpriority(os.PRIO_PROCESS, thread))
        threads[texts[0]] = threading.current_thread().name

    engine.on_run = on_run
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    options = SchedulerOptions(workers=1, worker_niceness=3, background_priority=priority)
    pool = Scheduler(options, metrics)
    try:
        submit(pool, engine, "job", Priority.BACKGROUND).result(timeout=5)
        submit(pool, engine, "live").result(timeout=5)
        engine.failure = RuntimeError("broken")
        with pytest.raises(EngineError):  # an engine's failure reaches the request through the runner
            submit(pool, engine, "broken", Priority.BACKGROUND).result(timeout=5)
    finally:
        pool.close()
    below = (os.SCHED_IDLE, caller) if priority is BackgroundPriority.IDLE else (os.SCHED_OTHER, 19)
    assert placed == {"job": below, "live": (os.SCHED_OTHER, min(caller + 3, 19)), "broken": below}
    assert threads["job"].startswith("voxserve-background")
    assert threads["live"].startswith("voxserve-worker")
    assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER


def test_background_segments_never_run_solo_and_interactive_ones_overtake_them(metrics: Metrics) -> None:
    engine = FakeEngine()
    pool = Scheduler(SchedulerOptions(workers=1), metrics)
    try:
        engine.gate.clear()
        job_trace = RequestTrace("job")
        book = [submit(pool, engine, f"book {n}", Priority.BACKGROUND, due=n, trace=job_trace) for n in range(3)]
        assert engine.started.wait(5)  # "book 0" holds the worker
        later = submit(pool, engine, "later")
        first = submit(pool, engine, "first", Priority.FIRST_SEGMENT)
        engine.gate.set()
        for future in [*book, later, first]:
            future.result(timeout=5)
    finally:
        pool.close()
    assert engine.ran == ["book 0", "first", "later", "book 1", "book 2"]
    assert not any(engine.solo_by_text[f"book {n}"] for n in range(3))  # alone, yet one core each


def test_engines_give_back_memory_once_the_workers_have_been_idle(metrics: Metrics) -> None:
    engine = FakeEngine()
    pool = Scheduler(SchedulerOptions(workers=1, release_memory_after_s=0.05), metrics)
    try:
        time.sleep(0.2)
        assert engine.memory_releases == 0  # nothing ran yet: nothing to give back
        blocker = held(pool, engine)
        time.sleep(0.2)
        assert engine.memory_releases == 0  # never while a segment runs
        engine.gate.set()
        blocker.result(timeout=5)
        wait_until(lambda: engine.memory_releases == 1)
        time.sleep(0.2)
        assert engine.memory_releases == 1  # once per idle spell, not over and over
        submit(pool, engine, "again").result(timeout=5)
        wait_until(lambda: engine.memory_releases == 2)
    finally:
        pool.close()
    assert count(metrics, "voxserve_memory_releases_total") == 2


def windowed(scheduler: Scheduler, engine: FakeEngine, text: str, reservation: Reservation | None = None
             ) -> Future[SegmentAudio]:  # fmt: skip
    segment = PreparedSegment(SynthesisParams(text=text, voice=FAKE_VOICE))
    return scheduler.submit(engine, segment, RequestTrace(), priority=Priority.FIRST_SEGMENT, due=0.0,
                            deadline=time.perf_counter() + 60, reservation=reservation, windowed=True)  # fmt: skip


def pieces(future: Future[SegmentAudio]) -> list[np.ndarray]:
    """A windowed segment's audio, window by window, following each window's `more`."""
    audio: SegmentAudio | None = future.result(5)
    found = []
    while audio is not None:
        found.append(audio.samples)
        audio = None if audio.more is None else audio.more.result(5)
    return found


def test_a_windowed_segment_comes_window_by_window_and_a_new_request_goes_between_its_windows() -> None:
    engine = FakeEngine(windows=3)
    scheduler = Scheduler(SchedulerOptions(workers=1))
    try:
        engine.gate.clear()
        long = windowed(scheduler, engine, "a long sentence")
        assert engine.started.wait(5)
        short = submit(scheduler, engine, "short", priority=Priority.FIRST_SEGMENT)
        engine.gate.set()
        found = pieces(long)
        assert short.result(5).samples.size == len("short")
    finally:
        scheduler.close()
    assert [len(piece) for piece in found] == [5, 5, 5]
    np.testing.assert_array_equal(np.concatenate(found), np.full(15, 0.15, np.float32))
    # The first window is all a request waits for; the next new request's first segment outranks the windows left.
    assert engine.ran == ["a long sentence", "short", "a long sentence#1", "a long sentence#2"]


def test_an_engine_without_windows_gives_the_whole_segment() -> None:
    engine = FakeEngine()
    scheduler = Scheduler(SchedulerOptions(workers=1))
    try:
        audio = windowed(scheduler, engine, "whole").result(5)
    finally:
        scheduler.close()
    assert audio.more is None
    assert len(audio.samples) == len("whole")
    assert engine.windowed == [False]  # never asked for windows it does not support


def test_closing_a_request_stops_its_segment_between_windows(metrics: Metrics) -> None:
    engine = FakeEngine(windows=4)
    scheduler = Scheduler(SchedulerOptions(workers=1), metrics)
    running, release = engine.hold("sentence#1")
    try:
        reservation = scheduler.admit(1)
        first = windowed(scheduler, engine, "sentence", reservation)
        assert running.wait(5)
        reservation.close()
        release.set()
        audio = first.result(5)
        second = audio.more
        assert second is not None
        third = second.result(5).more
        assert third is not None
        assert third.cancelled()  # queued under a closed reservation: refused, never run
        assert scheduler.queue_depth() == 0
    finally:
        scheduler.close()
    assert engine.ran == ["sentence", "sentence#1"]  # the two windows left never ran


def test_the_rest_of_a_solo_windowed_segment_goes_before_a_later_segment_taken_meanwhile() -> None:
    engine = FakeEngine(windows=3)
    scheduler = Scheduler(SchedulerOptions(workers=2))
    trace = RequestTrace()
    try:
        engine.gate.clear()
        segment = PreparedSegment(SynthesisParams(text="s0", voice=FAKE_VOICE))
        first = scheduler.submit(engine, segment, trace, priority=Priority.FIRST_SEGMENT, due=0.0,
                                 deadline=time.perf_counter() + 60, windowed=True)  # fmt: skip
        assert engine.started.wait(5)  # running solo: its request is all there is
        later = submit(scheduler, engine, "s1", due=1.0, trace=trace)
        wait_until(lambda: scheduler.queue_depth() == 0)  # the other worker has taken "s1" and waits out the solo
        engine.gate.set()
        found = pieces(first)
        later.result(5)
    finally:
        scheduler.close()
    assert len(found) == 3
    # "s1" was given back when the solo run ended, and the windows queued by then went first.
    assert engine.ran == ["s0", "s0#1", "s0#2", "s1"]
    assert engine.solo == [True, True, True, True]


def test_a_segment_is_decoded_whole_when_other_requests_wait() -> None:
    engine = FakeEngine(windows=3)
    scheduler = Scheduler(SchedulerOptions(workers=1))
    try:
        blocker = held(scheduler, engine)
        first = windowed(scheduler, engine, "first")
        other = submit(scheduler, engine, "another request's")
        engine.gate.set()
        audio = first.result(5)
        blocker.result(5)
        other.result(5)
    finally:
        scheduler.close()
    # Under load a window's context would be decoded twice on busy cores: the segment comes whole.
    assert audio.more is None
    assert len(audio.samples) == len("first")
    assert not any("#" in text for text in engine.ran)


def test_a_running_job_does_not_keep_a_live_request_from_its_windows() -> None:
    engine = FakeEngine(windows=3)
    scheduler = Scheduler(SchedulerOptions(workers=2))
    running, release = engine.hold("job segment")
    try:
        job = submit(scheduler, engine, "job segment", Priority.BACKGROUND)
        assert running.wait(5)
        found = pieces(windowed(scheduler, engine, "live"))
        release.set()
        job.result(5)
    finally:
        release.set()
        scheduler.close()
    assert len(found) == 3  # the job's segment runs on the other worker; the live request is the only live one
