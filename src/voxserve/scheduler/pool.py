"""`Scheduler`: segments from every request share one pool of worker threads.

Ordering: a request's first segment goes ahead of everything else (time to first audio); other segments run by
when their audio will be needed for playback (earliest due first), so a long text cannot starve short requests
and still streams without gaps. Admission is bounded; late and abandoned work is dropped before it runs.

Threads: a segment that has the machine to itself (no other request waiting) runs "solo" on every core, and
the other workers hold later segments back until it is done; under load each worker runs one segment on its
own share of the cores."""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from voxserve.engines.base import Engine, PreparedSegment
from voxserve.errors import DeadlineExceededError, EngineError, QueueFullError, VoxError
from voxserve.obs.metrics import Metrics
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.queue import Job, SegmentQueue

logger = logging.getLogger(__name__)


class Priority(IntEnum):
    """Lower runs first."""

    FIRST_SEGMENT = 0
    LATER_SEGMENT = 1


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    """`max_queue_size` counts queued segments (0 = unbounded); batching applies to engines that declare it."""

    workers: int = 1
    max_queue_size: int = 0
    max_batch_size: int = 1
    max_queue_delay_ms: float = 0.0
    max_length_ratio: float = 1.5

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("a scheduler needs at least one worker")
        if self.max_queue_size < 0 or self.max_batch_size < 1 or self.max_queue_delay_ms < 0:
            raise ValueError("max_queue_size >= 0, max_batch_size >= 1 and max_queue_delay_ms >= 0 are required")
        if self.max_length_ratio < 1:
            raise ValueError("max_length_ratio must be at least 1")


class Scheduler:
    """A fixed pool of worker threads. Size it with the engines' thread budget: workers x threads <= cores."""

    def __init__(self, options: SchedulerOptions, metrics: Metrics | None = None) -> None:
        self.options = options
        self._metrics = metrics or Metrics()
        self._queue = SegmentQueue()
        self._metrics.watch_queue(self.queue_depth, self.pending_audio_s)
        self._busy = 0
        self._solo_running = False
        self._busy_changed = threading.Condition()
        self._service_s = 0.2  # running mean of one segment's engine time, for Retry-After
        self._threads = [
            threading.Thread(target=self._work, name=f"voxserve-worker-{index}", daemon=True)
            for index in range(options.workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def workers(self) -> int:
        return len(self._threads)

    def queue_depth(self) -> int:
        return len(self._queue)

    def pending_audio_s(self) -> float:
        """Estimated audio the queued segments will make."""
        return self._queue.pending_audio_s()

    def admit(self, segments: int) -> None:
        """Refuse a request whose segments would overflow the queue. An empty queue admits any request, so a
        text longer than the queue still runs when the server is otherwise idle."""
        limit = self.options.max_queue_size
        queued = len(self._queue)
        if limit and queued and queued + segments > limit:
            self._metrics.rejected_requests.inc()
            retry_after_s = max(1, math.ceil(queued * self._service_s / self.workers))
            raise QueueFullError(f"server is at capacity ({queued} segments queued); retry later", retry_after_s)

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
    ) -> Future[np.ndarray]:
        """Queue one segment; the future holds its audio. `tenant` (an API key) shares the workers fairly with
        other tenants; `due` (perf_counter time) orders one tenant's segments of the same priority; past
        `deadline` the segment is dropped unrun. Cancelling the future before a worker takes it means no engine
        time is spent on it."""
        future: Future[np.ndarray] = Future()
        self._queue.put(Job(engine, segment, trace, future, deadline, priority, tenant), due)
        return future

    def close(self) -> None:
        """Stop the workers after the work already queued."""
        self._queue.close()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            self._wait_out_solo(job)
            batch = self._runnable([job])
            if batch and batch[0].engine.supports_batching and self.options.max_batch_size > 1:
                batch += self._runnable(
                    self._queue.take_compatible(
                        batch[0], self.options.max_batch_size - 1, self.options.max_queue_delay_ms / 1000,
                        self.options.max_length_ratio,
                    )
                )  # fmt: skip
            if batch:
                self._run(batch)

    def _wait_out_solo(self, job: Job) -> None:
        """A solo segment already has every core; running a later segment beside it would only slow it down.
        First segments still start at once: another request's time to first audio matters more."""
        if job.priority == Priority.FIRST_SEGMENT:
            return
        with self._busy_changed:
            self._busy_changed.wait_for(lambda: not self._solo_running)

    def _runnable(self, jobs: list[Job]) -> list[Job]:
        """Drop cancelled and expired jobs; mark the rest running."""
        now = time.perf_counter()
        runnable = []
        for job in jobs:
            if now > job.deadline and not job.future.cancelled():
                job.future.set_exception(DeadlineExceededError("request deadline passed while queued"))
                self._metrics.expired_segments.inc()
            elif job.future.set_running_or_notify_cancel():
                runnable.append(job)
            else:
                self._metrics.cancelled_segments.inc()
        return runnable

    def _run(self, batch: list[Job]) -> None:
        engine = batch[0].engine
        with self._busy_changed:
            self._busy += 1
            # Alone, or only followed by this request's own segments: one at a time on every core beats
            # splitting the cores between segments of one request (the longer one would straggle).
            solo = self._busy == 1 and self._queue.holds_only(batch[0].trace.request_id)
            self._solo_running = self._solo_running or solo
        started = time.perf_counter()
        for job in batch:
            job.trace.add("queue", started - job.submitted_at, start_s=job.submitted_at)
        outputs: list[np.ndarray] = []
        error: VoxError | None = None
        try:
            outputs = engine.run([job.segment for job in batch], solo=solo)
        except VoxError as exc:
            error = exc
        except Exception as exc:
            logger.exception("engine %s failed on a batch of %d", engine.name, len(batch))
            error = EngineError(f"engine {engine.name} failed: {exc}")
        elapsed = time.perf_counter() - started
        with self._busy_changed:
            self._busy -= 1
            self._solo_running = self._solo_running and not solo
            self._service_s = 0.9 * self._service_s + 0.1 * elapsed / len(batch)
            self._busy_changed.notify_all()
        # The trace is complete before any future resolves: a request may finish as soon as its audio is set.
        for job in batch:
            job.trace.add(
                "model", elapsed, start_s=started, engine=engine.name, chars=len(job.segment.params.text),
                batch=len(batch), solo=solo,
            )  # fmt: skip
        self._metrics.engine_items.labels(engine.name).inc(len(batch))
        self._metrics.engine_executions.labels(engine.name).inc()
        self._metrics.batch_size.labels(engine.name).observe(len(batch))
        if error is not None:
            self._fail(batch, error)
            return
        for job, audio in zip(batch, outputs, strict=True):
            job.future.set_result(audio)

    @staticmethod
    def _fail(batch: list[Job], error: VoxError) -> None:
        for job in batch:
            job.future.set_exception(error)
