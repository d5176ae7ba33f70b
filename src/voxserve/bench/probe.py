"""Resource use of the server under test (by pid, or from its Prometheus metrics) and of the bench client."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from voxserve.bench.records import ResourceUsage

SAMPLE_INTERVAL_S = 0.2


class ProcessProbe:
    """CPU cores used and peak RSS of a process tree between `start` and `stop`, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_rss = 0
        self._cpu_start = 0.0
        self._wall_start = 0.0

    def _sum_over_tree(self, measure: Callable[[psutil.Process], float]) -> float:
        total = 0.0
        for process in [self._process, *self._process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += measure(process)
        return total

    def _cpu_s(self) -> float:
        return self._sum_over_tree(lambda process: sum(process.cpu_times()[:2]))

    def _rss(self) -> int:
        return int(self._sum_over_tree(lambda process: process.memory_info().rss))

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._peak_rss = max(self._peak_rss, self._rss())

    def start(self) -> None:
        self._peak_rss = self._rss()
        self._cpu_start, self._wall_start = self._cpu_s(), time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> ResourceUsage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        wall_s = time.perf_counter() - self._wall_start
        cores = (self._cpu_s() - self._cpu_start) / wall_s if wall_s else None
        return ResourceUsage(cpu_cores=cores, peak_rss_bytes=max(self._peak_rss, self._rss()))


class MetricsProbe:
    """The same numbers from a voxserve server's `/metrics` (process collector): CPU from two scrapes, RSS
    sampled while the level runs."""

    def __init__(self, metrics_url: str) -> None:
        self._url = metrics_url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_rss = 0.0
        self._cpu_start: float | None = None
        self._wall_start = 0.0

    def _scrape(self) -> dict[str, float]:
        try:
            text = httpx.get(self._url, timeout=2).text
        except httpx.HTTPError:
            return {}
        wanted = {"process_cpu_seconds_total", "process_resident_memory_bytes"}
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in wanted
        }

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self._peak_rss = max(self._peak_rss, self._scrape().get("process_resident_memory_bytes", 0.0))

    def start(self) -> None:
        values = self._scrape()
        self._cpu_start = values.get("process_cpu_seconds_total")
        self._peak_rss = values.get("process_resident_memory_bytes", 0.0)
        self._wall_start = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> ResourceUsage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        wall_s = time.perf_counter() - self._wall_start
        values = self._scrape()
        cpu_end = values.get("process_cpu_seconds_total")
        cores = (cpu_end - self._cpu_start) / wall_s if cpu_end is not None and self._cpu_start is not None else None
        peak = max(self._peak_rss, values.get("process_resident_memory_bytes", 0.0))
        return ResourceUsage(cpu_cores=cores, peak_rss_bytes=int(peak) or None)
