"""`StackSampler`: samples every Python thread's stack at a fixed interval (the way py-spy does, but from
inside the process, so it needs no ptrace rights and sees thread names)."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType


@dataclass(frozen=True, slots=True)
class StackSample:
    """One thread's stack at `at_s` (`time.perf_counter`), outermost frame first."""

    at_s: float
    thread: str
    stack: tuple[str, ...]


class StackSampler:
    def __init__(self, interval_s: float = 0.01, max_samples: int = 200_000) -> None:
        self.interval_s = interval_s
        self._max_samples = max_samples
        self._samples: list[StackSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="voxserve-stack-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> list[StackSample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self._samples

    def _run(self) -> None:
        own = threading.get_ident()
        while not self._stop.wait(self.interval_s) and len(self._samples) < self._max_samples:
            names = {thread.ident: thread.name for thread in threading.enumerate()}
            now = time.perf_counter()
            for ident, frame in sys._current_frames().items():
                if ident != own:
                    self._samples.append(StackSample(now, names.get(ident, str(ident)), _stack(frame)))


def _stack(frame: FrameType | None) -> tuple[str, ...]:
    labels = []
    while frame is not None:
        code = frame.f_code
        labels.append(f"{code.co_qualname} ({_short_path(code.co_filename)}:{code.co_firstlineno})")
        frame = frame.f_back
    return tuple(reversed(labels))


def _short_path(filename: str) -> str:
    """`voxserve/service/speech.py` rather than the whole install path."""
    for marker in ("site-packages/", "/src/", "/lib/python"):
        if marker in filename:
            return filename.rsplit(marker, 1)[1]
    return filename.rsplit("/", 1)[-1]
