"""`Scheduler`: segments from every request share one pool of worker threads, most urgent first."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from voxserve.engines.base import Engine, PreparedSegment
from voxserve.errors import EngineError, VoxError
from voxserve.obs.trace import RequestTrace

logger = logging.getLogger(__name__)


class Priority(IntEnum):
    """Lower runs first. A request's first segment decides its time to first audio, so it jumps the queue."""

    FIRST_SEGMENT = 0
    LATER_SEGMENT = 1


@dataclass(slots=True)
class _Job:
    engine: Engine
    segment: PreparedSegment
    trace: RequestTrace
    future: Future[np.ndarray]
    submitted_at: float


_STOP = len(Priority)  # ranks after all work, so closing finishes what is queued


class Scheduler:
    """A fixed pool of worker threads; each takes one segment at a time, by priority then arrival.

    Size it with the engines' thread budget: workers x intra-op threads <= cores.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a scheduler needs at least one worker")
        self._queue: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._threads = [
            threading.Thread(target=self._work, name=f"voxserve-worker-{index}", daemon=True)
            for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def workers(self) -> int:
        return len(self._threads)

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def submit(
        self, engine: Engine, segment: PreparedSegment, trace: RequestTrace, priority: Priority
    ) -> Future[np.ndarray]:
        """Queue one segment; the future holds its audio. Cancelling the future before a worker takes it
        means no engine time is spent on it."""
        future: Future[np.ndarray] = Future()
        job = _Job(engine, segment, trace, future, time.perf_counter())
        self._queue.put((priority, next(self._sequence), job))
        return future

    def close(self) -> None:
        """Stop the workers after the work already queued."""
        for _ in self._threads:
            self._queue.put((_STOP, next(self._sequence), None))
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (job := self._queue.get()[2]) is not None:
            if job.future.set_running_or_notify_cancel():
                self._run(job)

    @staticmethod
    def _run(job: _Job) -> None:
        started = time.perf_counter()
        job.trace.add("queue", started - job.submitted_at)
        try:
            audio = job.engine.run([job.segment])[0]
        except VoxError as exc:
            job.future.set_exception(exc)
        except Exception as exc:
            logger.exception("request %s: engine %s failed", job.trace.request_id, job.engine.name)
            job.future.set_exception(EngineError(f"engine {job.engine.name} failed: {exc}"))
        else:
            job.future.set_result(audio)
        finally:
            job.trace.add("model", time.perf_counter() - started)
