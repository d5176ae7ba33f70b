"""`Cancellation`: tells blocking work on another thread that its request is over (deadline passed, client gone).

Threads cannot be interrupted, so work checks between its steps (a window, a segment) and stops at the next one.
A request that must not report failure for work whose effect it kept (a voice stored on disk) `commit`s first:
after that, cancelling fails and the request waits for the work's result instead."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TypeVar

from voxserve.errors import ClientDisconnectedError, DeadlineExceededError, VoxError

T = TypeVar("T")


class Cancellation:
    """One request's stop signal, safe to share between the event loop and worker threads. `deadline` is on the
    `time.perf_counter` clock."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._reason: tuple[type[VoxError], str] | None = None
        self._committed = False
        self._stopped: Future[None] = Future()  # resolved on cancel, so a blocked wait wakes at once

    @classmethod
    def after(cls, timeout_s: float) -> Cancellation:
        return cls(time.perf_counter() + timeout_s)

    def remaining_s(self) -> float:
        return self.deadline - time.perf_counter()

    @property
    def cancelled(self) -> bool:
        """True once cancelled or past the deadline (and not committed)."""
        with self._lock:
            return not self._committed and (self._reason is not None or self.remaining_s() <= 0)

    def cancel(self, error: type[VoxError] = ClientDisconnectedError, message: str = "the client went away") -> bool:
        """Stop the work with `error(message)` at its next check; False if it already committed."""
        with self._lock:
            if self._committed:
                return False
            if self._reason is None:
                self._reason = (error, message)
                self._stopped.set_result(None)
            return True

    def check(self) -> None:
        """Raise the reason to stop (`DeadlineExceededError` past the deadline), if there is one."""
        with self._lock:
            self._expire()
            reason = None if self._committed else self._reason
        if reason is not None:
            error, message = reason
            raise error(message)

    def commit(self) -> None:
        """Check one last time, then make the work's effect final: later cancels fail."""
        with self._lock:
            self._expire()
            reason = self._reason
            self._committed = reason is None
        if reason is not None:
            error, message = reason
            raise error(message)

    def wait(self, future: Future[T]) -> T:
        """`future`'s result, or this cancellation's error as soon as it is cancelled or its deadline passes.
        Leaves `future` as it is: cancelling it is the caller's choice."""
        while True:
            timeout = None if self._committed else max(self.remaining_s(), 0.0)
            done, _ = wait([future, self._stopped], timeout=timeout, return_when=FIRST_COMPLETED)
            if future in done:
                return future.result()
            self.check()

    def _expire(self) -> None:
        if self._reason is None and not self._committed and self.remaining_s() <= 0:
            self._reason = (DeadlineExceededError, "the request passed its deadline")
            self._stopped.set_result(None)
