"""`SegmentQueue`: jobs ordered by priority class, then playback due time, then arrival."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from voxserve.engines.base import Engine, PreparedSegment
from voxserve.obs.trace import RequestTrace


@dataclass(slots=True)
class Job:
    """One segment of one request, waiting for (or running on) a worker."""

    engine: Engine
    segment: PreparedSegment
    trace: RequestTrace
    future: Future[np.ndarray]
    deadline: float
    priority: int
    submitted_at: float = field(default_factory=time.perf_counter)

    @property
    def batch_key(self) -> tuple[object, ...]:
        """Segments that may share one engine call: same engine, voice and synthesis scales."""
        return self.engine.name, *self.segment.call_key

    @property
    def length(self) -> int:
        return len(self.segment.phoneme_ids) or len(self.segment.params.text)


class SegmentQueue:
    """A blocking priority queue. `get` returns `None` once the queue is closed and drained."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, int, Job]] = []
        self._requests: Counter[str] = Counter()
        self._pending_audio_s = 0.0
        self._sequence = itertools.count()
        self._ready = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._ready:
            return len(self._heap)

    def pending_audio_s(self) -> float:
        """Estimated seconds of audio the queued segments will make."""
        with self._ready:
            return self._pending_audio_s

    def holds_only(self, request_id: str) -> bool:
        """True when nothing but `request_id`'s segments (or nothing at all) is waiting."""
        with self._ready:
            return not self._requests or set(self._requests) == {request_id}

    def put(self, job: Job, due: float) -> None:
        with self._ready:
            heapq.heappush(self._heap, (job.priority, due, next(self._sequence), job))
            self._requests[job.trace.request_id] += 1
            self._pending_audio_s += job.segment.params.estimated_audio_s
            self._ready.notify()

    def get(self) -> Job | None:
        with self._ready:
            while not self._heap and not self._closed:
                self._ready.wait()
            if not self._heap:
                return None
            job = heapq.heappop(self._heap)[3]
            self._forget(job)
            return job

    def _forget(self, job: Job) -> None:
        self._pending_audio_s -= job.segment.params.estimated_audio_s
        self._requests[job.trace.request_id] -= 1
        if not self._requests[job.trace.request_id]:
            del self._requests[job.trace.request_id]
        if not self._requests:
            self._pending_audio_s = 0.0  # no float drift left behind by an empty queue

    def take_compatible(self, head: Job, max_items: int, wait_s: float, max_length_ratio: float) -> list[Job]:
        """Up to `max_items` more jobs that can share `head`'s batch: same engine and voice, length within
        `max_length_ratio` of head's (padding waste stays bounded). Waits up to `wait_s` for them to arrive."""
        deadline = time.perf_counter() + wait_s
        taken: list[Job] = []
        with self._ready:
            while True:
                taken += self._pop_compatible(head, max_items - len(taken), max_length_ratio)
                remaining = deadline - time.perf_counter()
                if len(taken) >= max_items or remaining <= 0 or self._closed:
                    return taken
                self._ready.wait(remaining)

    def _pop_compatible(self, head: Job, limit: int, max_length_ratio: float) -> list[Job]:
        def fits(job: Job) -> bool:
            shorter, longer = sorted((job.length, head.length))
            return job.batch_key == head.batch_key and longer <= max_length_ratio * max(shorter, 1)

        chosen = [entry for entry in sorted(self._heap) if fits(entry[3])][:limit]
        if chosen:
            kept = {id(entry) for entry in chosen}
            self._heap = [entry for entry in self._heap if id(entry) not in kept]
            heapq.heapify(self._heap)
            for entry in chosen:
                self._forget(entry[3])
        return [entry[3] for entry in chosen]

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
