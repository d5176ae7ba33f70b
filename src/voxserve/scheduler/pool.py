"""`Scheduler`: segments from every request share one pool of worker threads.

Ordering: a request's first segment goes ahead of everything else (time to first audio); other segments run by
when their audio will be needed for playback (earliest due first), so a long text cannot starve short requests
and still streams without gaps. Admission is bounded and exact: a request holds queue room from admission until
its segments are queued or it ends (`Reservation`). Late and abandoned work is dropped before it runs.

Threads: a segment that has the machine to itself (no other request waiting) runs "solo" on every core, and
the other workers hold later segments back until it is done; under load each worker runs one segment on its
own share of the cores. On CPU an express worker takes only first segments and runs each on every core, so a new
request's first audio never waits for a worker to finish a long segment; the other workers run at a lower OS
priority (`worker_niceness`), so the express worker (and the event loop that streams audio out) gets the cores
first, and they go on beside it rather than waiting it out. Background (long-form job) segments run lower still
(`background_priority`, SCHED_IDLE on Linux): a worker hands each to a runner thread at that priority and waits
for it, so a job takes only the CPU live speech leaves, even mid-segment (an unprivileged thread cannot raise its
priority back, hence runners of their own rather than the worker lowering itself).

Memory: once no segment has run for `release_memory_after_s`, the engines that ran give back the memory their
runtimes pool (and glibc its free heap), so a burst's high-water mark does not stay with the process for good.

Workers outlive anything an engine does (raising, returning the wrong number of outputs) and any race with a
cancelling client: the batch concerned fails with `engine_error`, the worker logs it and takes the next job."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass, replace

from voxserve.engines.base import Engine, PreparedSegment, SegmentAudio
from voxserve.errors import DeadlineExceededError, EngineError, QueueFullError, VoxError
from voxserve.obs.metrics import Metrics
from voxserve.obs.trace import RequestTrace
from voxserve.process import (
    BackgroundPriority,
    lower_thread_priority,
    lower_to_background,
    prestarted_pool,
    release_free_heap,
)
from voxserve.scheduler.queue import Job, Priority, SegmentQueue

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    """`max_queue_size` counts queued segments (0 = unbounded); batching applies to engines that declare it."""

    workers: int = 1
    max_queue_size: int = 0
    max_batch_size: int = 1
    max_queue_delay_ms: float = 0.0
    max_length_ratio: float = 1.5
    express_worker: bool = False  # one more worker that takes only first segments
    worker_niceness: int = 0  # how far below the rest of the server (express worker included) workers run
    background_priority: BackgroundPriority | None = None  # of runners for background segments; None: on the workers
    release_memory_after_s: float = 0.0  # idle time before engines give back pooled memory; 0 = never

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("a scheduler needs at least one worker")
        if self.max_queue_size < 0 or self.max_batch_size < 1 or self.max_queue_delay_ms < 0:
            raise ValueError("max_queue_size >= 0, max_batch_size >= 1 and max_queue_delay_ms >= 0 are required")
        if self.max_length_ratio < 1:
            raise ValueError("max_length_ratio must be at least 1")
        if not 0 <= self.worker_niceness <= 19:
            raise ValueError("worker_niceness must be 0..19")
        if self.release_memory_after_s < 0:
            raise ValueError("release_memory_after_s must be >= 0")


class Reservation:
    """One request's hold on the scheduler, from `Scheduler.admit`: queue room for its segments, and every segment
    submitted under it. Safe from any thread.

    `close()` ends the request, whenever that happens (before, during or after submission): later submits are
    refused (their futures come back cancelled, no engine time spent), segments still queued are cancelled and
    leave the queue at once, and room not used yet is given back. Close it however the request ends; `with` does
    that."""

    def __init__(self, queue: SegmentQueue, segments: int, on_withdrawn: Callable[[], None]) -> None:
        self._queue = queue
        self._held = segments
        self._jobs: dict[Future[SegmentAudio], Job] = {}  # submitted and not yet taken back by `finished`
        self._on_withdrawn = on_withdrawn  # counts a segment taken out of the queue unrun
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            jobs, self._jobs = list(self._jobs.values()), {}
            self._queue.release(self._held)
            self._held = 0
        for job in jobs:
            # Out of the queue now, not once a worker reaches it (long after a hang-up, under load).
            if job.future.cancel() and self._queue.withdraw(job):
                self._on_withdrawn()

    def finished(self, future: Future[SegmentAudio]) -> None:
        """The request has taken `future`'s audio: the reservation lets go of it (a long stream would otherwise hold
        every segment's audio until it ends)."""
        with self._lock:
            self._jobs.pop(future, None)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _put(self, job: Job, due: float) -> None:
        """Queue `job` into the room held for it; past that room it queues anyway (admission already passed).
        Under the lock, so a `close` racing a submit either sees the job and cancels it or refuses it."""
        with self._lock:
            if self._closed:
                job.future.cancel()
                return
            self._jobs[job.future] = job
            reserved = self._held > 0
            self._held -= reserved
            self._queue.put(job, due, reserved=reserved)


class Scheduler:
    """A fixed pool of worker threads. Size it with the engines' thread budget: workers x threads <= cores."""

    def __init__(self, options: SchedulerOptions, metrics: Metrics | None = None) -> None:
        self.options = options
        self._metrics = metrics or Metrics()
        self._queue = SegmentQueue()
        self._metrics.watch_queue(self.queue_depth, self.pending_audio_s)
        self._busy = 0
        self._live_busy = 0  # running batches of live (not background) requests
        self._solo_running = False
        self._busy_changed = threading.Condition()
        self._idle_since: float | None = time.monotonic()
        self._ran: dict[int, Engine] = {}  # engines that ran since memory was last released, by id
        self._closing = False
        self._service_s = 0.2  # running mean of one segment's engine time, for Retry-After
        # A worker hands a background batch to one of these and waits: the batch runs below every live segment.
        priority = options.background_priority
        self._background_runners = (
            prestarted_pool(options.workers, "voxserve-background", lower_to_background, (priority,))
            if priority is not None else None
        )  # fmt: skip
        self._threads = [
            threading.Thread(target=self._work, name=f"voxserve-worker-{index}", daemon=True)
            for index in range(options.workers)
        ]
        if options.express_worker:
            self._threads.append(
                threading.Thread(target=self._work_express, name="voxserve-worker-express", daemon=True)
            )
        if options.release_memory_after_s > 0:
            self._threads.append(threading.Thread(target=self._release_when_idle, name="voxserve-memory", daemon=True))
        for thread in self._threads:
            thread.start()

    @property
    def workers(self) -> int:
        """The workers that take any segment (the express worker aside)."""
        return self.options.workers

    def queue_depth(self) -> int:
        return len(self._queue)

    def pending_audio_s(self) -> float:
        """Estimated audio the queued segments will make."""
        return self._queue.pending_audio_s()

    def admit(self, segments: int) -> Reservation:
        """Hold queue room for a request's `segments`, or refuse it (`QueueFullError`, 429) when they would take
        the segments queued plus those held by admitted requests past `max_queue_size`. Checked and held in one
        step, so the bound is exact however many requests arrive at once. An idle queue (nothing queued or held)
        admits any request, so a text longer than the queue still runs. Submit the segments under the returned
        reservation, and close it when the request ends."""
        if not self._queue.reserve(segments, self.options.max_queue_size):
            self._metrics.rejected_requests.inc()
            occupied = self._queue.occupancy()
            retry_after_s = max(1, math.ceil(occupied * self._service_s / self.workers))
            raise QueueFullError(f"server is at capacity ({occupied} segments queued); retry later", retry_after_s)
        return Reservation(self._queue, segments, self._metrics.cancelled_segments.inc)

    def submit(
        self,
        engine: Engine,
        segment: PreparedSegment,
        trace: RequestTrace,
        *,
        priority: Priority,
        due: float,
        deadline: float,
        tenant: str = "",
        reservation: Reservation | None = None,
        windowed: bool = False,
    ) -> Future[SegmentAudio]:
        """Queue one segment; the future holds its audio. `tenant` (an API key) shares the workers fairly with
        other tenants; `due` (perf_counter time) orders one tenant's segments of the same priority; past
        `deadline` the segment is dropped unrun. Cancelling the future before a worker takes it means no engine
        time is spent on it. Under a `reservation` the segment fills room held by `admit`, and closing the
        reservation cancels it; once closed, the future comes back cancelled and nothing is queued.

        `windowed` (for an engine that `supports_windows`, when its request is the only live one, jobs aside): the
        future's audio is the segment's first window, and its `more` the next window's future; each window is
        queued when the one before it is done, due when a listener reaches it."""
        future: Future[SegmentAudio] = Future()
        windowed = windowed and engine.supports_windows
        job = Job(engine, segment, trace, future, deadline, priority, tenant, due, windowed, reservation=reservation)
        self._queue_job(job, due)
        return future

    def _queue_job(self, job: Job, due: float) -> None:
        if job.reservation is None:
            self._queue.put(job, due)
        else:
            job.reservation._put(job, due)

    def cancel(self, future: Future[SegmentAudio]) -> None:
        """Cancel a segment submitted without a reservation; one still queued leaves the queue now."""
        job = self._queue.queued_job(future)
        if future.cancel() and job is not None and self._queue.withdraw(job):
            self._metrics.cancelled_segments.inc()

    def close(self) -> None:
        """Stop the workers after the work already queued."""
        with self._busy_changed:
            self._closing = True
            self._busy_changed.notify_all()
        self._queue.close()
        for thread in self._threads:
            thread.join()
        if self._background_runners is not None:
            self._background_runners.shutdown()

    def _work(self) -> None:
        lower_thread_priority(self.options.worker_niceness)
        self._serve()

    def _work_express(self) -> None:
        self._serve(express=True)

    def _serve(self, *, express: bool = False) -> None:
        """Run jobs (first segments only, on the express worker) until the queue closes."""
        max_priority = Priority.FIRST_SEGMENT if express else None
        while (job := self._queue.get(max_priority)) is not None:
            if self._waited_out_solo(job):
                # Something more urgent may have been queued meanwhile (the rest of the segment that ran solo).
                self._queue.give_back(job)
                continue
            batch = [job]
            try:
                batch = self._gather(job)
                if batch:
                    self._run(batch, express=express)
            except Exception as exc:
                # A bug or a race outside the engine call: whatever its futures are waiting for is not coming.
                logger.exception("worker failed on a batch of %d segments; it goes on", len(batch))
                _fail(batch, EngineError(f"worker failed: {exc!r}"))

    def _waited_out_solo(self, job: Job) -> bool:
        """A solo segment already has every core; running a later segment beside it would only slow it down, so
        wait for it to end (True if it had to). First segments still start at once: another request's time to
        first audio matters more."""
        if job.priority == Priority.FIRST_SEGMENT:
            return False
        with self._busy_changed:
            if not self._solo_running:
                return False
            self._busy_changed.wait_for(lambda: not self._solo_running)
            return True

    def _gather(self, job: Job) -> list[Job]:
        """`job` and, for an engine that batches, compatible jobs queued with it; those still worth running."""
        batch = self._runnable([job])
        if batch and batch[0].engine.supports_batching and self.options.max_batch_size > 1:
            batch += self._runnable(
                self._queue.take_compatible(
                    batch[0], self.options.max_batch_size - 1, self.options.max_queue_delay_ms / 1000,
                    self.options.max_length_ratio,
                )
            )  # fmt: skip
        return batch

    def _runnable(self, jobs: list[Job]) -> list[Job]:
        """Mark jobs running; drop (and settle) cancelled and expired ones."""
        now = time.perf_counter()
        return [job for job in jobs if self._claim(job, now)]

    def _claim(self, job: Job, now: float) -> bool:
        # Marked running first: from then on a client's cancel cannot land between a check and a settle.
        if not job.future.set_running_or_notify_cancel():
            self._metrics.cancelled_segments.inc()
            return False
        if now > job.deadline:
            _fail([job], DeadlineExceededError("request deadline passed while queued"))
            self._metrics.expired_segments.inc()
            return False
        return True

    def _run(self, batch: list[Job], *, express: bool) -> None:
        engine = batch[0].engine
        solo, live_alone = self._start_running(batch)
        # The express worker outranks the others (they run niced), so its first segments get every core without
        # holding them back: that is what `solo` means to the engine, not to the other workers.
        wide = solo or express
        started = time.perf_counter()
        for job in batch:
            job.trace.add("queue", started - job.submitted_at, start_s=job.submitted_at)
        outputs: list[SegmentAudio] = []
        error: VoxError | None = None
        try:
            # The rest of a windowed segment is queued before this run counts as ended: a worker waiting for it
            # to end finds it there, ahead of later segments.
            # Windows pay off only for a live request alone (background jobs give way to its windows, which stay
            # first segments): under live load a window's context is decoded twice on cores that are all busy,
            # and the segment's whole audio is a longer head start for the one after it.
            windowed = live_alone and len(batch) == 1 and batch[0].windowed
            runners = self._background_runners if batch[0].background else None
            if runners is None:
                synthesized = _synthesize(engine, batch, wide, windowed=windowed)
            else:
                synthesized = runners.submit(_synthesize, engine, batch, wide, windowed=windowed).result()
            outputs = [self._continue(job, audio) for job, audio in zip(batch, synthesized, strict=True)]
        except VoxError as exc:
            error = exc
        finally:
            elapsed = time.perf_counter() - started
            self._stop_running(batch, solo, elapsed / len(batch))
        # The trace is complete before any future resolves: a request may finish as soon as its audio is set.
        window = batch[0].continuation is not None
        for job in batch:
            job.trace.add(
                "model", elapsed, start_s=started, engine=engine.name, chars=len(job.segment.params.text),
                batch=len(batch), solo=wide, window=window,
            )  # fmt: skip
        self._count(engine.name, 0 if window else len(batch), failed=error is not None)
        if error is not None:
            _fail(batch, error)
            return
        for job, audio in zip(batch, outputs, strict=True):
            with suppress(InvalidStateError):  # settled meanwhile by someone else: nobody waits for this audio
                job.future.set_result(audio)

    def _continue(self, job: Job, audio: SegmentAudio) -> SegmentAudio:
        """`audio` as the request gets it: with the rest of its segment queued as a job of its own, due when a
        listener reaches it, and `more` the future of its next window."""
        rest = audio.rest
        if rest is None:
            return audio
        more: Future[SegmentAudio] = Future()
        # The rest of a first segment is what a listener who just got its first audio hears next: it stays a first
        # segment (the express worker takes it; by due time, next to other requests' first segments).
        priority = job.priority
        following = Job(job.engine, job.segment, job.trace, more, job.deadline, priority, job.tenant, job.start_due,
                        continuation=rest, reservation=job.reservation)  # fmt: skip
        self._queue_job(following, job.start_due + rest.offset_s)
        return replace(audio, rest=None, more=more)

    def _start_running(self, batch: list[Job]) -> tuple[bool, bool]:
        """Count the batch as running; whether it runs solo, and whether its request is the only live one
        running or waiting (background jobs aside)."""
        with self._busy_changed:
            self._busy += 1
            self._live_busy += not batch[0].background
            self._idle_since = None
            self._ran[id(batch[0].engine)] = batch[0].engine
            # Alone, or only followed by this request's own segments: one at a time on every core beats
            # splitting the cores between segments of one request (the longer one would straggle). Background
            # segments never run solo: a job keeps every worker busy, each on one core, which makes more audio
            # per second (and the same audio whichever worker makes it).
            alone = not batch[0].background and self._queue.holds_only(batch[0].trace.request_id)
            solo = self._busy == 1 and alone
            self._solo_running = self._solo_running or solo
            return solo, alone and self._live_busy == 1

    def _stop_running(self, batch: list[Job], solo: bool, per_item_s: float) -> None:
        with self._busy_changed:
            self._busy -= 1
            self._live_busy -= not batch[0].background
            if not self._busy:
                self._idle_since = time.monotonic()
            self._solo_running = self._solo_running and not solo
            self._service_s = 0.9 * self._service_s + 0.1 * per_item_s
            self._busy_changed.notify_all()

    def _release_when_idle(self) -> None:
        """Each time the workers have been idle for `release_memory_after_s` after running something, have the
        engines that ran give back their pooled memory."""
        while (engines := self._wait_for_idle()) is not None:
            for engine in engines:
                try:
                    engine.release_memory()
                except Exception:
                    logger.exception("engine %s failed to release memory; it goes on", engine.name)
            release_free_heap()
            self._metrics.memory_releases.inc()

    def _wait_for_idle(self) -> list[Engine] | None:
        """The engines that ran, once idle long enough; `None` when closing."""
        with self._busy_changed:
            while not self._closing:
                idle_since = self._idle_since
                if not self._ran or idle_since is None:
                    self._busy_changed.wait()
                    continue
                remaining_s = idle_since + self.options.release_memory_after_s - time.monotonic()
                if remaining_s <= 0:
                    engines, self._ran = list(self._ran.values()), {}
                    return engines
                self._busy_changed.wait(remaining_s)
            return None

    def _count(self, engine: str, items: int, *, failed: bool) -> None:
        """One engine call of `items` segments (0: the next window of a segment already counted)."""
        self._metrics.engine_items.labels(engine).inc(items)
        self._metrics.engine_executions.labels(engine).inc()
        if items:
            self._metrics.batch_size.labels(engine).observe(items)
        if failed:
            self._metrics.engine_failures.labels(engine).inc()


def _synthesize(engine: Engine, batch: list[Job], solo: bool, *, windowed: bool = False) -> list[SegmentAudio]:
    """One engine call for `batch` (or the next window of a continuation), its outputs in order. Whatever goes
    wrong, engines being code we do not control (an exception of any type, a count of outputs that does not
    match), comes out as a `VoxError`."""
    continuation = batch[0].continuation
    try:
        if continuation is not None:
            outputs = [continuation.run(solo=solo)]
        else:
            outputs = list(engine.run([job.segment for job in batch], solo=solo, windowed=windowed))
    except VoxError:
        raise
    except Exception as exc:
        logger.exception("engine %s failed on a batch of %d", engine.name, len(batch))
        raise EngineError(f"engine {engine.name} failed: {exc}") from exc
    if len(outputs) != len(batch):
        logger.error("engine %s returned %d outputs for %d segments", engine.name, len(outputs), len(batch))
        raise EngineError(f"engine {engine.name} returned {len(outputs)} outputs for {len(batch)} segments")
    return outputs


def _fail(batch: list[Job], error: VoxError) -> None:
    for job in batch:
        with suppress(InvalidStateError):  # settled meanwhile (cancelled before it ran): nothing left to tell
            job.future.set_exception(error)
