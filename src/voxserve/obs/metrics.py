"""Prometheus metrics, all named `voxserve_<thing>_<unit>`, on a registry owned by one server instance.

The telemetry layer and the scheduler record them; caches, the queue, the process and the GPU are read by
collectors at scrape time, so a scrape always shows the present."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voxserve.cache.lru import CacheStats
from voxserve.obs.gpu import GpuSnapshot

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 60.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
CHARS_PER_S_BUCKETS = (10, 25, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _CacheCollector(Collector):
    def __init__(self, read_stats: Callable[[], Mapping[str, CacheStats]]) -> None:
        self._read_stats = read_stats

    def collect(self) -> Iterator[Metric]:
        families = {
            "hits": CounterMetricFamily("voxserve_cache_hits", "Cache lookups that found an entry.", labels=["cache"]),
            "misses": CounterMetricFamily(
                "voxserve_cache_misses", "Cache lookups that found nothing.", labels=["cache"]
            ),
            "evictions": CounterMetricFamily("voxserve_cache_evictions", "Entries evicted for room.", labels=["cache"]),
        }
        entries = GaugeMetricFamily("voxserve_cache_entries", "Entries held.", labels=["cache"])
        size = GaugeMetricFamily("voxserve_cache_size", "Budget units held (bytes or entries).", labels=["cache"])
        for name, stats in self._read_stats().items():
            for field, family in families.items():
                family.add_metric([name], getattr(stats, field))
            entries.add_metric([name], stats.entries)
            size.add_metric([name], stats.size)
        yield from (*families.values(), entries, size)


class _GpuCollector(Collector):
    """`voxserve_gpu_available` is 0 on a machine without an NVIDIA GPU; the per-GPU families are then empty."""

    def __init__(self, read_gpus: Callable[[], list[GpuSnapshot]]) -> None:
        self._read_gpus = read_gpus

    def collect(self) -> Iterator[Metric]:
        gpus = self._read_gpus()
        labels = ["gpu", "name"]
        available = GaugeMetricFamily("voxserve_gpu_available", "NVIDIA GPUs visible through NVML (0: no GPU).")
        available.add_metric([], len(gpus))
        families = {
            "utilization": GaugeMetricFamily(
                "voxserve_gpu_utilization_ratio", "Share of the last sample period a kernel ran.", labels=labels
            ),
            "memory_used_bytes": GaugeMetricFamily("voxserve_gpu_memory_used_bytes", "GPU memory used.", labels=labels),
            "memory_total_bytes": GaugeMetricFamily(
                "voxserve_gpu_memory_total_bytes", "GPU memory in total.", labels=labels
            ),
            "temperature_c": GaugeMetricFamily(
                "voxserve_gpu_temperature_celsius", "GPU core temperature.", labels=labels
            ),
            "sm_clock_hz": GaugeMetricFamily("voxserve_gpu_sm_clock_hertz", "Current SM clock.", labels=labels),
            "memory_clock_hz": GaugeMetricFamily(
                "voxserve_gpu_memory_clock_hertz", "Current memory clock.", labels=labels
            ),
        }
        throttled = GaugeMetricFamily(
            "voxserve_gpu_throttle_active", "1 while a clock throttle reason is active.", labels=[*labels, "reason"]
        )
        for gpu in gpus:
            ident = [str(gpu.index), gpu.name]
            for field, family in families.items():
                value = getattr(gpu, field)
                if value is not None:
                    family.add_metric(ident, value)
            for reason in gpu.throttle_reasons:
                throttled.add_metric([*ident, reason], 1)
        yield from (available, *families.values(), throttled)


class Metrics:
    """Every metric voxserve exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.requests = Counter(
            "voxserve_requests", "Finished HTTP requests.", ["route", "status", "engine", "format"], registry=registry
        )
        self.request_duration = Histogram(
            "voxserve_request_duration_seconds", "Request start to last byte written.", ["route"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.time_to_first_audio = Histogram(
            "voxserve_time_to_first_audio_seconds", "Request start to the first encoded audio bytes.", ["engine"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.stage_duration = Histogram(
            "voxserve_stage_duration_seconds", "Time one speech request spent in one stage (summed over segments).",
            ["stage"], buckets=STAGE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.rtf = Histogram(
            "voxserve_rtf_ratio", "Real-time factor of speech requests: wall time / audio time (lower is faster).",
            ["engine"], buckets=RTF_BUCKETS, registry=registry,
        )  # fmt: skip
        self.chars_per_second = Histogram(
            "voxserve_input_chars_per_second", "Input characters per wall-clock second of a speech request.",
            ["engine"], buckets=CHARS_PER_S_BUCKETS, registry=registry,
        )  # fmt: skip
        self.audio_seconds = Counter(
            "voxserve_audio_seconds", "Seconds of audio produced.", ["engine"], registry=registry
        )
        self.input_chars = Counter("voxserve_input_chars", "Characters of input text spoken.", registry=registry)
        self.queue_depth = Gauge("voxserve_queue_depth_segments", "Segments waiting for a worker.", registry=registry)
        self.queue_pending_audio = Gauge(
            "voxserve_queue_pending_audio_seconds", "Estimated audio the queued segments will make.",
            registry=registry,
        )  # fmt: skip
        self.engine_items = Counter(
            "voxserve_engine_items", "Segments synthesized by engines.", ["engine"], registry=registry
        )
        self.engine_executions = Counter(
            "voxserve_engine_executions", "Engine calls (a batch is one call).", ["engine"], registry=registry
        )
        self.batch_size = Histogram(
            "voxserve_batch_size_segments", "Segments per engine call.", ["engine"], buckets=BATCH_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.engine_failures = Counter(
            "voxserve_engine_failures", "Engine calls that failed (raised, or returned the wrong number of outputs).",
            ["engine"], registry=registry,
        )  # fmt: skip
        self.memory_releases = Counter(
            "voxserve_memory_releases", "Times the engines gave back pooled memory after the workers went idle.",
            registry=registry,
        )  # fmt: skip
        self.jobs = Counter(
            "voxserve_jobs", "Long-form jobs by the state they reached (queued when made).", ["status"],
            registry=registry,
        )  # fmt: skip
        self.job_segments = Counter(
            "voxserve_job_segments", "Segments of long-form jobs written to disk.", registry=registry
        )
        self.truncated_responses = Counter(
            "voxserve_truncated_responses",
            "Streamed responses that failed after their 200 and headers were sent: the body ends early (audio) or "
            "with an error event (SSE). Also counted in voxserve_requests_total under the error's status.",
            ["route", "code"], registry=registry,
        )  # fmt: skip
        self.rejected_requests = Counter(
            "voxserve_requests_rejected", "Requests refused with 429 because the queue was full.", registry=registry
        )
        self.timed_out_requests = Counter(
            "voxserve_requests_timed_out", "Requests that passed their deadline (504).", registry=registry
        )
        self.cancelled_requests = Counter(
            "voxserve_requests_cancelled",
            "Requests whose client went away before the response ended (recorded with status 499).",
            registry=registry,
        )
        self.cancelled_segments = Counter(
            "voxserve_segments_cancelled", "Queued segments dropped because their request went away.", registry=registry
        )
        self.expired_segments = Counter(
            "voxserve_segments_expired", "Queued segments dropped because their deadline passed.", registry=registry
        )
        self.process_threads = Gauge("voxserve_process_threads", "Threads in the server process.", registry=registry)
        self.process_cpu = Gauge(
            "voxserve_process_cpu_cores", "Cores the server process kept busy over the last sample.", registry=registry
        )
        self.system_cpu = Gauge(
            "voxserve_system_cpu_utilization_ratio", "Machine-wide CPU use over the last sample.", registry=registry
        )
        self.event_loop_lag = Histogram(
            "voxserve_event_loop_lag_seconds", "How late the event loop woke for a timer.", buckets=LAG_BUCKETS,
            registry=registry,
        )  # fmt: skip

    def watch_caches(self, read_stats: Callable[[], Mapping[str, CacheStats]]) -> None:
        """Export hit/miss/eviction counts of caches, read from `read_stats` at every scrape."""
        self.registry.register(_CacheCollector(read_stats))

    def watch_gpus(self, read_gpus: Callable[[], list[GpuSnapshot]]) -> None:
        """Export GPU state, read from `read_gpus` at every scrape."""
        self.registry.register(_GpuCollector(read_gpus))

    def watch_queue(self, depth: Callable[[], float], pending_audio_s: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)
        self.queue_pending_audio.set_function(pending_audio_s)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
