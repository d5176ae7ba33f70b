"""`SegmentQueue`: jobs ordered by priority class, then fair share between tenants (API keys), then playback due
time, then arrival.

Background segments (long-form jobs) come after every interactive one and hold no room under admission: a job
keeps only a few segments queued at a time, and interactive requests are refused only for interactive load.

Fair share is start-time fair queueing over segments: each tenant has a virtual time, the estimated audio its
taken segments will make; the next segment of a priority class comes from the tenant with the least. A tenant
that was idle starts at the least virtual time of the busy ones, so idling banks no credit, and one key keeping
sixteen streams busy cannot starve another's single request."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from voxserve.engines.base import Continuation, Engine, PreparedSegment, SegmentAudio
from voxserve.obs.trace import RequestTrace

if TYPE_CHECKING:
    from voxserve.scheduler.pool import Reservation


class Priority(IntEnum):
    """Lower runs first."""

    FIRST_SEGMENT = 0
    LATER_SEGMENT = 1
    BACKGROUND = 2


@dataclass(slots=True)
class Job:
    """One segment of one request, or the windows left of one (`continuation`), waiting for (or running on) a
    worker. `start_due` is when a listener reaches the segment's start; `windowed` asks the engine for the first
    window now and the rest as a continuation, queued under the request's `reservation`."""

    engine: Engine
    segment: PreparedSegment
    trace: RequestTrace
    future: Future[SegmentAudio]
    deadline: float
    priority: int
    tenant: str = ""
    start_due: float = 0.0
    windowed: bool = False
    continuation: Continuation | None = None
    reservation: Reservation | None = None  # the request's, which the job's continuation is queued under
    submitted_at: float = field(default_factory=time.perf_counter)
    due: float = 0.0  # its place among its tenant's jobs of its priority, as queued
    queued: bool = False  # in a queue's lanes (not taken by a worker, nor withdrawn)
    audio_s: float = field(init=False)  # estimated audio this job makes, fixed while it is queued

    def __post_init__(self) -> None:
        continuation = self.continuation
        self.audio_s = continuation.remaining_s if continuation else self.segment.params.estimated_audio_s

    @property
    def batch_key(self) -> tuple[object, ...]:
        """Segments that may share one engine call: same engine, voice and synthesis scales. A continuation
        shares its call with nothing."""
        if self.continuation is not None:
            return (id(self.continuation),)
        return self.engine.name, *self.segment.call_key

    @property
    def background(self) -> bool:
        return self.priority >= Priority.BACKGROUND

    @property
    def length(self) -> int:
        return len(self.segment.phoneme_ids) or len(self.segment.params.text)


_Entry = tuple[int, float, int, Job]


class SegmentQueue:
    """A blocking priority queue. `get` returns `None` once the queue is closed and drained.

    Room can be held ahead of time (`reserve`) for segments that are still being prepared; queued and held
    segments are counted together under one lock, so admission stays exact however many requests open at once."""

    def __init__(self) -> None:
        self._lanes: dict[str, list[_Entry]] = {}
        self._virtual_s: dict[str, float] = {}
        self._size = 0
        self._background = 0
        self._reserved = 0
        self._requests: Counter[str] = Counter()
        self._interactive_requests: Counter[str] = Counter()
        self._pending_audio_s = 0.0
        self._sequence = itertools.count()
        self._ready = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._ready:
            return self._size

    def pending_audio_s(self) -> float:
        """Estimated seconds of audio the queued segments will make."""
        with self._ready:
            return self._pending_audio_s

    def holds_only(self, request_id: str) -> bool:
        """True when no interactive segment but `request_id`'s (or none at all) is waiting."""
        with self._ready:
            return not self._interactive_requests or set(self._interactive_requests) == {request_id}

    def occupancy(self) -> int:
        """Interactive segments queued plus room held for segments not queued yet."""
        with self._ready:
            return self._size - self._background + self._reserved

    def reserve(self, segments: int, limit: int) -> bool:
        """Hold room for `segments` unless occupancy would pass `limit` (0: no limit). An empty queue with
        nothing held takes any number, so a text longer than the queue still runs on an otherwise idle server."""
        with self._ready:
            occupied = self._size - self._background + self._reserved
            if limit and occupied and occupied + segments > limit:
                return False
            self._reserved += segments
            return True

    def release(self, segments: int) -> None:
        """Give back held room that will not be used."""
        with self._ready:
            self._reserved -= segments

    def tenants(self) -> dict[str, int]:
        """Queued segments per tenant."""
        with self._ready:
            return {tenant: len(lane) for tenant, lane in self._lanes.items()}

    def put(self, job: Job, due: float, *, reserved: bool = False) -> None:
        """Queue `job`; `reserved` says it fills room held for it (the hold turns into a queued segment)."""
        with self._ready:
            self._reserved -= reserved
            lane = self._lanes.get(job.tenant)
            if lane is None:
                floor = min(self._virtual_s[tenant] for tenant in self._lanes) if self._lanes else 0.0
                self._virtual_s[job.tenant] = max(self._virtual_s.get(job.tenant, 0.0), floor)
                lane = self._lanes[job.tenant] = []
            heapq.heappush(lane, (job.priority, due, next(self._sequence), job))
            job.due = due
            job.queued = True
            self._size += 1
            self._background += job.background
            self._requests[job.trace.request_id] += 1
            if not job.background:
                self._interactive_requests[job.trace.request_id] += 1
            self._pending_audio_s += job.audio_s
            # Every waiter: one that takes only urgent jobs must not be the only one woken for a later one.
            self._ready.notify_all()

    def get(self, max_priority: int | None = None) -> Job | None:
        """The next job, waiting for one; `None` once the queue is closed and holds nothing this caller takes.
        With `max_priority`, only jobs of that priority or more urgent are taken (others are left for others)."""
        with self._ready:
            while not (lanes := self._lanes_within(max_priority)) and not self._closed:
                self._ready.wait()
            if not lanes:
                return None
            tenant = min(lanes, key=lambda name: self._rank(self._lanes[name][0]))
            job = heapq.heappop(self._lanes[tenant])[3]
            self._forget(job)
            return job

    def give_back(self, job: Job) -> None:
        """Queue a job taken by `get` again, as it was (its tenant is no longer charged for it)."""
        with self._ready:
            self._virtual_s[job.tenant] -= job.audio_s
            self.put(job, job.due)

    def queued_job(self, future: Future[SegmentAudio]) -> Job | None:
        """The queued job whose future is `future`, if it is still queued."""
        with self._ready:
            return next((entry[3] for lane in self._lanes.values() for entry in lane if entry[3].future is future),
                        None)  # fmt: skip

    def withdraw(self, job: Job) -> bool:
        """Take `job` out of the queue if it is still there (its request is gone): its room is free for new
        requests now, not only once a worker would have reached it, which under load can be long after a hang-up.
        True if it was queued."""
        with self._ready:
            if not job.queued:
                return False
            lane = self._lanes[job.tenant]
            lane[:] = [entry for entry in lane if entry[3] is not job]
            heapq.heapify(lane)
            self._forget(job, ran=False)
            return True

    def _lanes_within(self, max_priority: int | None) -> list[str]:
        """Tenants whose most urgent queued job is within `max_priority` (every tenant with a job, for None)."""
        return [name for name, lane in self._lanes.items() if max_priority is None or lane[0][0] <= max_priority]

    def _rank(self, entry: _Entry) -> tuple[int, float, float, int]:
        priority, due, sequence, job = entry
        return priority, self._virtual_s[job.tenant], due, sequence

    def _forget(self, job: Job, *, ran: bool = True) -> None:
        """Account for a job leaving the queue to run (or to be dropped by a worker), or withdrawn unrun (its
        tenant is then not charged for it)."""
        job.queued = False
        self._size -= 1
        self._background -= job.background
        if not job.background:
            self._interactive_requests[job.trace.request_id] -= 1
            if not self._interactive_requests[job.trace.request_id]:
                del self._interactive_requests[job.trace.request_id]
        if ran:
            self._virtual_s[job.tenant] += job.audio_s
        if job.tenant in self._lanes and not self._lanes[job.tenant]:  # a batch may take a lane's last jobs at once
            del self._lanes[job.tenant]
        self._pending_audio_s -= job.audio_s
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
            # A live request's batch never waits on job segments (nor a job's batch take a live segment's place).
            same_class = job.background == head.background
            return same_class and job.batch_key == head.batch_key and longer <= max_length_ratio * max(shorter, 1)

        entries = [entry for lane in self._lanes.values() for entry in lane if fits(entry[3])]
        chosen = sorted(entries, key=self._rank)[:limit]
        taken = {id(entry) for entry in chosen}
        for tenant in {entry[3].tenant for entry in chosen}:
            lane = self._lanes[tenant] = [entry for entry in self._lanes[tenant] if id(entry) not in taken]
            heapq.heapify(lane)
        for entry in chosen:
            self._forget(entry[3])
        return [entry[3] for entry in chosen]

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
