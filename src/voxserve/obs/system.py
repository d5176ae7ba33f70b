"""`SystemMonitor`: samples the process, the machine and its GPUs once a second, for the metrics, the
diagnostics window and the summary log."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from voxserve.obs.gpu import GpuProbe, GpuSnapshot


@dataclass(frozen=True, slots=True)
class SystemSample:
    """The process and machine over one sample period (CPU figures are averages over it)."""

    at: float
    process_cpu_cores: float
    system_cpu_ratio: float
    per_core_ratio: tuple[float, ...]
    rss_bytes: int
    threads: int
    gpus: tuple[GpuSnapshot, ...]


@dataclass(frozen=True, slots=True)
class SystemSummary:
    """Averages and peaks over recent samples."""

    samples: int
    cores: int
    process_cpu_cores: float
    system_cpu_ratio: float
    busiest_core_ratio: float
    idlest_core_ratio: float
    rss_bytes: int
    peak_rss_bytes: int
    threads: int
    gpu_utilization: float | None
    gpu_throttle_reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        values = {name: getattr(self, name) for name in self.__slots__}
        return {name: round(value, 4) if isinstance(value, float) else value for name, value in values.items()}


class SystemMonitor:
    """A daemon thread that takes a `SystemSample` every `interval_s` and hands it to `on_sample`."""

    def __init__(
        self,
        gpu: GpuProbe,
        interval_s: float = 1.0,
        max_age_s: float = 300.0,
        on_sample: Callable[[SystemSample], None] | None = None,
    ) -> None:
        self.gpu = gpu
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._samples: deque[SystemSample] = deque(maxlen=max(2, int(max_age_s / interval_s)))
        self._on_sample = on_sample
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_cpu = self._cpu_seconds()
        self._last_at = time.monotonic()
        self._last_core_times = psutil.cpu_times(percpu=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="voxserve-system-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def sample(self) -> SystemSample:
        """Take one sample now (CPU figures cover the time since the previous one)."""
        now = time.monotonic()
        cpu = self._cpu_seconds()
        core_times = psutil.cpu_times(percpu=True)
        per_core = tuple(map(_busy_ratio, self._last_core_times, core_times))
        self._last_core_times = core_times
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            threads = self._process.num_threads()
        sample = SystemSample(
            at=now,
            process_cpu_cores=(cpu - self._last_cpu) / max(now - self._last_at, 1e-6),
            system_cpu_ratio=sum(per_core) / max(len(per_core), 1),
            per_core_ratio=per_core,
            rss_bytes=rss,
            threads=threads,
            gpus=tuple(self.gpu.read()),
        )
        self._last_cpu, self._last_at = cpu, now
        with self._lock:
            self._samples.append(sample)
        if self._on_sample is not None:
            self._on_sample(sample)
        return sample

    def samples(self, since: float = 0.0) -> list[SystemSample]:
        with self._lock:
            return [sample for sample in self._samples if sample.at >= since]

    def summary(self, since: float = 0.0) -> SystemSummary | None:
        """Averages over the samples taken since `since` (`time.monotonic`), or `None` before the first."""
        samples = self.samples(since) or self.samples()[-1:]
        if not samples:
            return None
        count = len(samples)
        cores = len(samples[-1].per_core_ratio)
        core_means = [sum(sample.per_core_ratio[core] for sample in samples) / count for core in range(cores)]
        utilizations = [gpu.utilization for sample in samples for gpu in sample.gpus if gpu.utilization is not None]
        return SystemSummary(
            samples=count,
            cores=cores,
            process_cpu_cores=sum(sample.process_cpu_cores for sample in samples) / count,
            system_cpu_ratio=sum(sample.system_cpu_ratio for sample in samples) / count,
            busiest_core_ratio=max(core_means, default=0.0),
            idlest_core_ratio=min(core_means, default=0.0),
            rss_bytes=samples[-1].rss_bytes,
            peak_rss_bytes=max(sample.rss_bytes for sample in samples),
            threads=samples[-1].threads,
            gpu_utilization=sum(utilizations) / len(utilizations) if utilizations else None,
            gpu_throttle_reasons=tuple(
                sorted({reason for sample in samples for gpu in sample.gpus for reason in gpu.throttle_reasons})
            ),
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system


def _busy_ratio(before: Any, after: Any) -> float:
    """Share of the time between two per-core readings the core was not idle (I/O wait counts as idle)."""
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
    return min(max(1 - idle / total, 0.0), 1.0) if total > 0 else 0.0
