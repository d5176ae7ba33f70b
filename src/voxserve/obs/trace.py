"""`RequestTrace`: where one request's time went, stage by stage, span by span."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

# Every stage a request may record, in pipeline order (README "Observability" explains each).
STAGES = (
    "receive", "fetch", "decode", "analyze", "cache", "normalize", "segment", "phonemize", "queue", "model",
    "postprocess", "convert", "encode", "write",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Span:
    """One timed piece of work: `start_s` on the `time.perf_counter` clock, the thread that did it, and
    details worth seeing in a profile (segment index, characters, batch size)."""

    stage: str
    start_s: float
    duration_s: float
    thread: str
    detail: dict[str, object] = field(default_factory=dict)


class RequestTrace:
    """Accumulates per-stage spans for one request; safe to record from worker threads.

    A stage recorded several times (one `model` call per segment) sums its durations and counts its calls.
    Stages that overlap in time (segments synthesized in parallel) may sum to more than the wall time.
    A disabled trace (telemetry off) records nothing but the request's start, first audio and end.
    """

    def __init__(self, request_id: str | None = None, *, started_at: float | None = None, enabled: bool = True) -> None:
        self.request_id = request_id or uuid.uuid4().hex[:16]
        self.started_at = time.perf_counter() if started_at is None else started_at
        self.enabled = enabled
        self.first_audio_s: float | None = None
        self.finished_s: float | None = None
        self.input_chars = 0
        self.audio_s = 0.0
        self.segments = 0
        self.engine = ""
        self.voice = ""
        self.response_format = ""
        self._spans: list[Span] = []
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float, *, start_s: float | None = None, **detail: object) -> None:
        """Record `seconds` spent in `stage`, which ended now unless `start_s` says when it began."""
        if not self.enabled:
            return
        start = time.perf_counter() - seconds if start_s is None else start_s
        span = Span(stage, start, seconds, threading.current_thread().name, detail)
        with self._lock:
            self._spans.append(span)

    @contextmanager
    def stage(self, name: str, **detail: object) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started, start_s=started, **detail)

    async def in_thread(self, stage: str, work: Callable[..., T], *args: object, **kwargs: object) -> T:
        """`work(*args, **kwargs)` on a worker thread, timed as `stage`, so the event loop stays free."""
        with self.stage(stage):
            return await asyncio.to_thread(work, *args, **kwargs)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started_at

    def mark_first_audio(self) -> None:
        if self.first_audio_s is None:
            self.first_audio_s = self.elapsed_s()

    def finish(self) -> None:
        if self.finished_s is None:
            self.finished_s = self.elapsed_s()

    def total_s(self) -> float:
        return self.finished_s if self.finished_s is not None else self.elapsed_s()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def stages(self) -> dict[str, float]:
        """Seconds per stage, summed over its spans, in pipeline order."""
        totals: dict[str, float] = {}
        for span in self.spans():
            totals[span.stage] = totals.get(span.stage, 0.0) + span.duration_s
        return dict(sorted(totals.items(), key=lambda item: _stage_order(item[0])))

    def summary(self) -> dict[str, object]:
        """A JSON-ready account of the request: stage seconds and counts, each model call, every span from the
        request's start (a waterfall), totals, real-time factor and characters per second."""
        spans = self.spans()
        counts: dict[str, int] = {}
        for span in spans:
            counts[span.stage] = counts.get(span.stage, 0) + 1
        total = self.total_s()
        return {
            "request_id": self.request_id,
            "stages_s": {name: round(seconds, 6) for name, seconds in self.stages().items()},
            "stage_counts": counts,
            "model_calls": [
                {"duration_s": round(span.duration_s, 6), **span.detail} for span in spans if span.stage == "model"
            ],
            "spans": [self._span_dict(span) for span in sorted(spans, key=lambda span: span.start_s)],
            "time_to_first_audio_s": None if self.first_audio_s is None else round(self.first_audio_s, 6),
            "total_s": round(total, 6),
            "input_chars": self.input_chars,
            "segments": self.segments,
            "audio_s": round(self.audio_s, 6),
            "rtf": round(total / self.audio_s, 6) if self.audio_s else None,
            "chars_per_s": round(self.input_chars / total, 3) if total > 0 else None,
        }

    def _span_dict(self, span: Span) -> dict[str, object]:
        start_s = round(span.start_s - self.started_at, 6)
        return {"stage": span.stage, "start_s": start_s, "duration_s": round(span.duration_s, 6), **span.detail}

    def server_timing(self) -> str:
        """The stages as a `Server-Timing` header value (durations in milliseconds)."""
        parts = [f"{name};dur={seconds * 1000:.2f}" for name, seconds in self.stages().items()]
        if self.first_audio_s is not None:
            parts.append(f"ttfa;dur={self.first_audio_s * 1000:.2f}")
        parts.append(f"total;dur={self.total_s() * 1000:.2f}")
        return ", ".join(parts)


def sum_stages(stage_maps: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Seconds per stage added up over many requests (each a stage -> seconds map)."""
    totals: dict[str, float] = {}
    for stages in stage_maps:
        for stage, seconds in stages.items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return totals


def _stage_order(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)
