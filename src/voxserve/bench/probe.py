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


class _SampledProbe:
    """CPU cores used between `start` and `stop`, and peak RSS sampled every `interval_s` in a thread."""

    interval_s = 0.2

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_rss = 0
        self._cpu_start: float | None = None
        self._wall_start = 0.0

    def _read(self) -> tuple[float | None, int]:
        """CPU seconds so far (None when unknown) and resident bytes now."""
        raise NotImplementedError

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak_rss = max(self._peak_rss, self._read()[1])

    def start(self) -> None:
        self._cpu_start, self._peak_rss = self._read()
        self._wall_start = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> ResourceUsage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        wall_s = time.perf_counter() - self._wall_start
        cpu_end, rss = self._read()
        known = cpu_end is not None and self._cpu_start is not None and wall_s > 0
        cores = (cpu_end - self._cpu_start) / wall_s if known else None  # type: ignore[operator]
        return ResourceUsage(cpu_cores=cores, peak_rss_bytes=max(self._peak_rss, rss) or None)


class ProcessProbe(_SampledProbe):
    """A process and its children, through psutil."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self._process = psutil.Process(pid)

    def _sum_over_tree(self, measure: Callable[[psutil.Process], float]) -> float:
        total = 0.0
        for process in [self._process, *self._process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += measure(process)
        return total

    def _read(self) -> tuple[float | None, int]:
        cpu_s = self._sum_over_tree(lambda process: sum(process.cpu_times()[:2]))
        return cpu_s, int(self._sum_over_tree(lambda process: process.memory_info().rss))


class MetricsProbe(_SampledProbe):
    """A voxserve server's own process metrics from `/metrics`, scraped once a second."""

    interval_s = 1.0
    _WANTED = ("process_cpu_seconds_total", "process_resident_memory_bytes")

    def __init__(self, metrics_url: str) -> None:
        super().__init__()
        self._url = metrics_url

    def _read(self) -> tuple[float | None, int]:
        try:
            text = httpx.get(self._url, timeout=2).text
        except httpx.HTTPError:
            return None, 0
        values = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in self._WANTED
        }
        return values.get(self._WANTED[0]), int(values.get(self._WANTED[1], 0))
