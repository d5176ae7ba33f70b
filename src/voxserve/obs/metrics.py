"""Prometheus metrics, all named `voxserve_<thing>_<unit>`, on a registry owned by one server instance.

Services and the scheduler record them; engines and caches only keep counts that collectors read at scrape time."""

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

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


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


class Metrics:
    """Every metric voxserve exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.queue_depth = Gauge("voxserve_queue_depth_segments", "Segments waiting for a worker.", registry=registry)
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
        self.rejected_requests = Counter(
            "voxserve_requests_rejected", "Requests refused with 429 because the queue was full.", registry=registry
        )
        self.timed_out_requests = Counter(
            "voxserve_requests_timed_out", "Requests that passed their deadline (504).", registry=registry
        )
        self.cancelled_segments = Counter(
            "voxserve_segments_cancelled", "Queued segments dropped because their request went away.", registry=registry
        )
        self.expired_segments = Counter(
            "voxserve_segments_expired", "Queued segments dropped because their deadline passed.", registry=registry
        )

    def watch_caches(self, read_stats: Callable[[], Mapping[str, CacheStats]]) -> None:
        """Export hit/miss/eviction counts of caches, read from `read_stats` at every scrape."""
        self.registry.register(_CacheCollector(read_stats))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
