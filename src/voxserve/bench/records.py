"""What one benchmark request measured, and the statistics of a concurrency level."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class RequestRecord:
    """One request. Times are seconds from the request's start; `audio_s` is decoded from the response."""

    text_chars: int
    status: int = 0
    ttfa_s: float | None = None
    latency_s: float = 0.0
    audio_s: float = 0.0
    body_bytes: int = 0
    max_gap_s: float = 0.0
    stalls: int = 0  # times a real-time player starting at the first audio ran dry (`bench.playback`)
    stall_s: float = 0.0  # how long it waited in all
    error: str | None = None
    started_at_s: float = 0.0


@dataclass(slots=True)
class ResourceUsage:
    """What a process used during a level (None where it could not be measured)."""

    cpu_cores: float | None = None
    peak_rss_bytes: int | None = None


@dataclass(slots=True)
class LevelSummary:
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    requests_per_s: float
    audio_s_per_wall_s: float
    rtf_p50: float | None
    latency_s: dict[str, float]
    ttfa_s: dict[str, float]
    max_gap_s_p95: float | None
    chars_per_s: float
    stalls: int = 0
    stall_s: float = 0.0
    requests_with_stall: int = 0
    server: ResourceUsage = field(default_factory=ResourceUsage)
    client: ResourceUsage = field(default_factory=ResourceUsage)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=float), [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(np.mean(values))}


def summarize(concurrency: int, records: Sequence[RequestRecord], wall_s: float) -> LevelSummary:
    """Statistics over the successful requests of one level; errors are counted, not timed."""
    ok = [record for record in records if record.error is None]
    audio_s = sum(record.audio_s for record in ok)
    rtfs = [record.latency_s / record.audio_s for record in ok if record.audio_s > 0]
    gaps = [record.max_gap_s for record in ok]
    return LevelSummary(
        concurrency=concurrency,
        requests=len(records),
        errors=len(records) - len(ok),
        wall_s=wall_s,
        requests_per_s=len(ok) / wall_s if wall_s else 0.0,
        audio_s_per_wall_s=audio_s / wall_s if wall_s else 0.0,
        rtf_p50=float(np.median(rtfs)) if rtfs else None,
        latency_s=percentiles([record.latency_s for record in ok]),
        ttfa_s=percentiles([record.ttfa_s for record in ok if record.ttfa_s is not None]),
        max_gap_s_p95=float(np.percentile(gaps, 95)) if gaps else None,
        chars_per_s=sum(record.text_chars for record in ok) / wall_s if wall_s else 0.0,
        stalls=sum(record.stalls for record in ok),
        stall_s=sum(record.stall_s for record in ok),
        requests_with_stall=sum(record.stalls > 0 for record in ok),
    )
