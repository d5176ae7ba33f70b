"""The recent window as a time series: finished requests and system samples grouped into equal buckets, oldest
first, for a live dashboard."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxserve.obs.system import SystemSample
from voxserve.obs.window import RequestRecord, percentile


def timeline(
    records: Sequence[RequestRecord], samples: Sequence[SystemSample], now: float, bucket_s: float, buckets: int
) -> list[dict[str, object]]:
    """`buckets` buckets of `bucket_s` ending at `now` (`time.monotonic`). Each: its start relative to now
    (`start_s`, negative), requests and errors finished in it, audio seconds made per second, TTFA p50/p95, the
    process's mean CPU use in cores and the GPUs' mean utilization in percent; `None` where the bucket has nothing
    to say."""
    start = now - bucket_s * buckets
    request_groups: list[list[RequestRecord]] = [[] for _ in range(buckets)]
    sample_groups: list[list[SystemSample]] = [[] for _ in range(buckets)]
    for record in records:
        index = _bucket(record.finished_at, start, bucket_s, buckets)
        if index is not None:
            request_groups[index].append(record)
    for sample in samples:
        index = _bucket(sample.at, start, bucket_s, buckets)
        if index is not None:
            sample_groups[index].append(sample)
    return [
        _point(index * bucket_s - bucket_s * buckets, bucket_s, request_groups[index], sample_groups[index])
        for index in range(buckets)
    ]


def _bucket(at: float, start: float, bucket_s: float, buckets: int) -> int | None:
    index = int((at - start) // bucket_s)
    return index if 0 <= index < buckets else None


def _point(
    start_s: float, bucket_s: float, records: list[RequestRecord], samples: list[SystemSample]
) -> dict[str, object]:
    ok = [record for record in records if record.ok]
    ttfas = np.array([record.ttfa_s for record in ok if record.ttfa_s is not None])
    ttfa_p50, ttfa_p95 = percentile(ttfas, 50), percentile(ttfas, 95)
    utilizations = [gpu.utilization for sample in samples for gpu in sample.gpus if gpu.utilization is not None]
    return {
        "start_s": round(start_s, 3),
        "requests": len(ok),
        "errors": len(records) - len(ok),
        "audio_s_per_s": round(sum(record.audio_s for record in ok) / bucket_s, 4),
        "ttfa_p50_s": None if ttfa_p50 is None else round(ttfa_p50, 6),
        "ttfa_p95_s": None if ttfa_p95 is None else round(ttfa_p95, 6),
        "cpu_cores": round(float(np.mean([sample.process_cpu_cores for sample in samples])), 4) if samples else None,
        "gpu_utilization": round(float(np.mean(utilizations)), 2) if utilizations else None,
    }
