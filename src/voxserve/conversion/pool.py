"""`ConversionPool`: where conversion and voice-analysis work runs, and how much of it at once.

Not on asyncio's default executor, which speech uses to phonemize and encode: a few threads of its own, so
conversions can never hold every core, and a limit on the conversions (and voice registrations) in progress at
once. One more is refused with 429 and a Retry-After estimate rather than queued without bound."""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from voxserve.conversion.cancellation import Cancellation
from voxserve.errors import ClientDisconnectedError, DeadlineExceededError, QueueFullError
from voxserve.process import lower_thread_priority, prestarted_pool

T = TypeVar("T")
# How long a conversion holds its slot, assumed until the first one has finished (then measured).
FIRST_HOLD_S = 5.0
THREAD_PREFIX = "voxserve-convert"


@dataclass(frozen=True, slots=True)
class ConversionPoolOptions:
    """`conversion_threads` run the work; `max_concurrent_conversions` may be in progress (more than the threads:
    a streamed conversion waits on its client, a registration on the scheduler). The threads run `niceness`
    below speech's priority, so on a busy machine speech gets the cores first."""

    conversion_threads: int = 1
    max_concurrent_conversions: int = 2
    niceness: int = 10

    def __post_init__(self) -> None:
        if self.conversion_threads < 1 or self.max_concurrent_conversions < 1:
            raise ValueError("conversion_threads and max_concurrent_conversions must be at least 1")
        if not 0 <= self.niceness <= 19:
            raise ValueError("niceness must be 0..19")


class Slot:
    """One conversion's place among the pool's `max_concurrent_conversions`. Release it when the conversion
    ends; releasing again does nothing."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._release()


class ConversionPool:
    def __init__(self, options: ConversionPoolOptions | None = None) -> None:
        self.options = options or ConversionPoolOptions()
        self._executor = prestarted_pool(
            self.options.conversion_threads, THREAD_PREFIX, lower_thread_priority, (self.options.niceness,)
        )
        self._lock = threading.Lock()
        self._admitted_at: dict[int, float] = {}
        self._ids = itertools.count()
        self._hold_s = FIRST_HOLD_S

    def in_progress(self) -> int:
        """Conversions admitted and not yet released."""
        with self._lock:
            return len(self._admitted_at)

    def admit(self) -> Slot:
        """A slot for one more conversion, or `QueueFullError` (429) when all are taken; its Retry-After is when
        the oldest one in progress should end, by the running mean of how long conversions take."""
        now = time.perf_counter()
        with self._lock:
            if len(self._admitted_at) >= self.options.max_concurrent_conversions:
                oldest_s = now - min(self._admitted_at.values())
                retry_after_s = max(1, math.ceil(self._hold_s - oldest_s))
                raise QueueFullError(
                    f"{len(self._admitted_at)} conversions are in progress, the most this server runs at once; "
                    "retry later",
                    retry_after_s,
                )
            slot_id = next(self._ids)
            self._admitted_at[slot_id] = now
        return Slot(functools.partial(self._release, slot_id))

    async def run(self, cancellation: Cancellation, work: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """`work(*args, **kwargs)` on the pool's threads, for a request stopped by `cancellation`. Past its
        deadline this raises `DeadlineExceededError` at once: work not yet started never starts, work already
        running finishes in its thread and is dropped (unless it committed; then its result is returned). A
        cancelled caller (a client that left) cancels `cancellation`, so blocking work that checks it stops at
        its next step."""
        cancellation.check()
        call = functools.partial(work, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self._executor, _unless_cancelled, cancellation, call)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(cancellation.remaining_s(), 0.0))
        except TimeoutError:
            if not cancellation.cancel(DeadlineExceededError, "the request passed its deadline"):
                return await future
            future.cancel()
            raise DeadlineExceededError("the request passed its deadline") from None
        except asyncio.CancelledError:
            cancellation.cancel(ClientDisconnectedError, "the request was abandoned")
            future.cancel()
            raise

    def close(self) -> None:
        """Drop work not yet started; work running finishes in its thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _release(self, slot_id: int) -> None:
        with self._lock:
            held_s = time.perf_counter() - self._admitted_at.pop(slot_id)
            self._hold_s = 0.8 * self._hold_s + 0.2 * held_s


def _unless_cancelled(cancellation: Cancellation, call: Callable[[], T]) -> T:
    """Work that waited in the pool's queue past its request's end is not started."""
    cancellation.check()
    return call()
