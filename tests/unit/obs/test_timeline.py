from __future__ import annotations

from voxserve.obs.gpu import GpuSnapshot
from voxserve.obs.system import SystemSample
from voxserve.obs.timeline import timeline
from voxserve.obs.window import RequestRecord

NOW = 1000.0


def record(finished_at: float, *, status: int = 200, audio_s: float = 2.0, ttfa_s: float | None = 0.1) -> RequestRecord:
    return RequestRecord(status, "piper", "wav", 20, audio_s, 0.5, ttfa_s, finished_at=finished_at)


def sample(at: float, cores: float, gpu_utilization: float | None = None) -> SystemSample:
    gpus = () if gpu_utilization is None else (GpuSnapshot(0, "H100", gpu_utilization, 1, 2, 50.0, 1.0, 1.0, ()),)
    return SystemSample(at, cores, 0.5, (0.5, 0.5), 1, 1, gpus)


def test_requests_and_samples_land_in_their_buckets_oldest_first() -> None:
    records = [
        record(NOW - 25),  # before the series: dropped
        record(NOW - 15, ttfa_s=0.1),
        record(NOW - 12, ttfa_s=0.3, audio_s=4.0),
        record(NOW - 11, status=500),
        record(NOW - 1, ttfa_s=None),
    ]
    samples = [sample(NOW - 14, 1.0, 40.0), sample(NOW - 13, 0.5, 60.0), sample(NOW - 2, 2.0)]
    series = timeline(records, samples, NOW, bucket_s=10.0, buckets=2)
    assert [point["start_s"] for point in series] == [-20.0, -10.0]
    older, newer = series
    assert (older["requests"], older["errors"], older["audio_s_per_s"]) == (2, 1, 0.6)
    assert older["ttfa_p50_s"] == 0.2
    assert (older["cpu_cores"], older["gpu_utilization"]) == (0.75, 50.0)
    assert (newer["requests"], newer["ttfa_p50_s"]) == (1, None)
    assert (newer["cpu_cores"], newer["gpu_utilization"]) == (2.0, None)


def test_an_idle_series_is_all_empty_buckets() -> None:
    series = timeline([], [], NOW, bucket_s=5.0, buckets=3)
    assert series == [
        {"start_s": start, "requests": 0, "errors": 0, "audio_s_per_s": 0.0, "ttfa_p50_s": None,
         "ttfa_p95_s": None, "cpu_cores": None, "gpu_utilization": None}
        for start in (-15.0, -10.0, -5.0)
    ]  # fmt: skip
