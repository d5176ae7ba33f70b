"""The recent window: the last few minutes of finished speech requests, and statistics over them."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from voxserve.obs.trace import sum_stages


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished speech request, as the window keeps it. `stages` are seconds per stage, summed over
    segments; `total_s` runs from the request's arrival to its last byte written."""

    status: int
    engine: str
    response_format: str
    input_chars: int
    audio_s: float
    total_s: float
    ttfa_s: float | None
    stages: dict[str, float] = field(default_factory=dict)
    finished_at: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        return self.status < 400


@dataclass(frozen=True, slots=True)
class LengthCorrelation:
    """Latency against input length: least-squares slope and Pearson's r."""

    slope_s_per_100_chars: float
    intercept_s: float
    r: float
    requests: int


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Statistics over the successful requests of a window; `None` where there is no data."""

    span_s: float
    requests: int
    errors: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttfa_p50_s: float | None
    ttfa_p95_s: float | None
    rtf_p50: float | None
    chars_per_s_p50: float | None
    audio_s: float
    stage_totals_s: dict[str, float]
    length_correlation: LengthCorrelation | None

    @property
    def busy_s(self) -> float:
        """Work time over all stages except waiting in the queue."""
        return sum(seconds for stage, seconds in self.stage_totals_s.items() if stage != "queue")

    def stage_shares(self) -> dict[str, float]:
        """Each stage's share of busy time (queue wait excluded: it is not work)."""
        busy = self.busy_s
        if busy <= 0:
            return {}
        return {stage: seconds / busy for stage, seconds in self.stage_totals_s.items() if stage != "queue"}

    def as_dict(self) -> dict[str, object]:
        correlation = self.length_correlation
        return {
            "span_s": round(self.span_s, 3),
            "requests": self.requests,
            "errors": self.errors,
            "latency_p50_s": _round(self.latency_p50_s),
            "latency_p95_s": _round(self.latency_p95_s),
            "ttfa_p50_s": _round(self.ttfa_p50_s),
            "ttfa_p95_s": _round(self.ttfa_p95_s),
            "rtf_p50": _round(self.rtf_p50),
            "chars_per_s_p50": _round(self.chars_per_s_p50),
            "audio_s": round(self.audio_s, 3),
            "stage_totals_s": {stage: round(seconds, 6) for stage, seconds in self.stage_totals_s.items()},
            "stage_shares": {stage: round(share, 4) for stage, share in self.stage_shares().items()},
            "length_correlation": None
            if correlation is None
            else {
                "slope_s_per_100_chars": round(correlation.slope_s_per_100_chars, 6),
                "intercept_s": round(correlation.intercept_s, 6),
                "r": round(correlation.r, 4),
                "requests": correlation.requests,
            },
        }


def window_stats(records: list[RequestRecord], span_s: float) -> WindowStats:
    """Statistics over `records`, a deterministic function of them."""
    ok = [record for record in records if record.ok]
    latencies = np.array([record.total_s for record in ok])
    ttfas = np.array([record.ttfa_s for record in ok if record.ttfa_s is not None])
    rtfs = np.array([record.total_s / record.audio_s for record in ok if record.audio_s > 0])
    speeds = np.array([record.input_chars / record.total_s for record in ok if record.total_s > 0])
    return WindowStats(
        span_s=span_s,
        requests=len(ok),
        errors=len(records) - len(ok),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        ttfa_p50_s=percentile(ttfas, 50),
        ttfa_p95_s=percentile(ttfas, 95),
        rtf_p50=percentile(rtfs, 50),
        chars_per_s_p50=percentile(speeds, 50),
        audio_s=sum(record.audio_s for record in ok),
        stage_totals_s=sum_stages(record.stages for record in ok),
        length_correlation=length_correlation(ok),
    )


def length_correlation(records: list[RequestRecord]) -> LengthCorrelation | None:
    """How latency grows with input length; `None` with fewer than 3 requests or no spread in length."""
    if len(records) < 3:
        return None
    chars = np.array([record.input_chars for record in records], dtype=np.float64)
    latency = np.array([record.total_s for record in records], dtype=np.float64)
    if np.ptp(chars) == 0 or np.ptp(latency) == 0:
        return None
    slope, intercept = np.polyfit(chars, latency, 1)
    r = float(np.corrcoef(chars, latency)[0, 1])
    return LengthCorrelation(float(slope) * 100, float(intercept), r, len(records))


class RecentWindow:
    """The last `max_requests` finished requests younger than `max_age_s`; safe across threads."""

    def __init__(self, max_requests: int = 1000, max_age_s: float = 300.0) -> None:
        self.max_age_s = max_age_s
        self._records: deque[RequestRecord] = deque(maxlen=max_requests)
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        cutoff = time.monotonic() - self.max_age_s
        with self._lock:
            while self._records and self._records[0].finished_at < cutoff:
                self._records.popleft()
            return list(self._records)

    def stats(self) -> WindowStats:
        records = self.records()
        span = time.monotonic() - records[0].finished_at if records else 0.0
        return window_stats(records, span)


def percentile(values: np.ndarray, q: float) -> float | None:
    """The `q`th percentile, or `None` for no values."""
    return float(np.percentile(values, q)) if len(values) else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
