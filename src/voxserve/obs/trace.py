"""`RequestTrace`: where one request's time went, stage by stage."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


class RequestTrace:
    """Accumulates per-stage durations for one request; safe to record from worker threads.

    A stage recorded several times (one `model` call per segment) sums its durations and counts its calls.
    Stages that overlap in time (segments synthesized in parallel) may sum to more than the wall time.
    """

    def __init__(self, request_id: str | None = None) -> None:
        self.request_id = request_id or uuid.uuid4().hex[:16]
        self.started_at = time.perf_counter()
        self.first_audio_s: float | None = None
        self.finished_s: float | None = None
        self.input_chars = 0
        self.audio_s = 0.0
        self._durations: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._durations[stage] = self._durations.get(stage, 0.0) + seconds
            self._counts[stage] = self._counts.get(stage, 0) + 1

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started_at

    def mark_first_audio(self) -> None:
        if self.first_audio_s is None:
            self.first_audio_s = self.elapsed_s()

    def finish(self) -> None:
        if self.finished_s is None:
            self.finished_s = self.elapsed_s()

    def stages(self) -> dict[str, float]:
        with self._lock:
            return dict(self._durations)

    def summary(self) -> dict[str, object]:
        """A JSON-ready account of the request: stage seconds, counts, totals, real-time factor."""
        total = self.finished_s if self.finished_s is not None else self.elapsed_s()
        with self._lock:
            stages = {name: round(seconds, 6) for name, seconds in self._durations.items()}
            counts = dict(self._counts)
        return {
            "request_id": self.request_id,
            "stages_s": stages,
            "stage_counts": counts,
            "time_to_first_audio_s": None if self.first_audio_s is None else round(self.first_audio_s, 6),
            "total_s": round(total, 6),
            "input_chars": self.input_chars,
            "audio_s": round(self.audio_s, 6),
            "rtf": round(total / self.audio_s, 6) if self.audio_s else None,
        }

    def server_timing(self) -> str:
        """The stages as a `Server-Timing` header value (durations in milliseconds)."""
        parts = [f"{name};dur={seconds * 1000:.2f}" for name, seconds in self.stages().items()]
        if self.first_audio_s is not None:
            parts.append(f"ttfa;dur={self.first_audio_s * 1000:.2f}")
        parts.append(f"total;dur={self.elapsed_s() * 1000 if self.finished_s is None else self.finished_s * 1000:.2f}")
        return ", ".join(parts)
