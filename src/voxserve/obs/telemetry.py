"""`Telemetry`: where finished requests go. It feeds the Prometheus metrics, the recent window the diagnostics
read, the debug log, the periodic summary line and any listener (a profiler capture)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from voxserve.obs.gpu import GpuProbe
from voxserve.obs.loop_lag import EventLoopLag
from voxserve.obs.metrics import Metrics
from voxserve.obs.system import SystemMonitor, SystemSample
from voxserve.obs.trace import RequestTrace
from voxserve.obs.window import RecentWindow, RequestRecord

logger = logging.getLogger(__name__)

TraceListener = Callable[[RequestTrace], None]


@dataclass(frozen=True, slots=True)
class TelemetryOptions:
    """`enabled` off: requests are neither traced nor recorded (metrics keep only what the scheduler and
    caches count). `summary_every` requests log one summary line (0: never)."""

    enabled: bool = True
    summary_every: int = 0
    window_s: float = 300.0
    window_requests: int = 1000
    sample_interval_s: float = 1.0


class Telemetry:
    def __init__(self, options: TelemetryOptions, metrics: Metrics | None = None) -> None:
        self.options = options
        self.metrics = metrics or Metrics()
        self.window = RecentWindow(options.window_requests, options.window_s)
        self.gpu = GpuProbe()
        self.system = SystemMonitor(self.gpu, options.sample_interval_s, options.window_s, self._export_sample)
        self.loop_lag = EventLoopLag(max_age_s=options.window_s, on_lag=self.metrics.event_loop_lag.observe)
        self.metrics.watch_gpus(self.gpu.read)
        self._listeners: list[TraceListener] = []
        self._lock = threading.Lock()
        self._speech_requests = 0

    @property
    def enabled(self) -> bool:
        return self.options.enabled

    def start(self) -> None:
        if self.enabled:
            self.system.start()

    def stop(self) -> None:
        self.system.stop()
        self.gpu.close()

    def new_trace(self, request_id: str | None = None) -> RequestTrace:
        return RequestTrace(request_id, enabled=self.enabled)

    def add_listener(self, listener: TraceListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: TraceListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def observe(self, route: str, status: int, trace: RequestTrace, duration_s: float) -> None:
        """Record one finished HTTP request; `trace.engine` is set for speech requests, which also enter the
        window, the per-request histograms and the debug log."""
        if trace.engine:
            self._observe_speech(status, trace, duration_s)
        # Counted last: once a request shows in voxserve_requests_total, everything about it is recorded.
        self.metrics.request_duration.labels(route).observe(duration_s)
        self.metrics.requests.labels(route, str(status), trace.engine or "none", trace.response_format or "none").inc()

    def _observe_speech(self, status: int, trace: RequestTrace, duration_s: float) -> None:
        record = RequestRecord(
            status=status, engine=trace.engine, response_format=trace.response_format,
            input_chars=trace.input_chars, audio_s=trace.audio_s, total_s=duration_s,
            ttfa_s=trace.first_audio_s, stages=trace.stages(),
        )  # fmt: skip
        self.window.add(record)
        if record.ok:
            self._record_speech(trace, record)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("request %s %d: %s", trace.request_id, status, trace.summary())
        with self._lock:
            listeners = list(self._listeners)
            self._speech_requests += 1
            summary_due = self.options.summary_every and self._speech_requests % self.options.summary_every == 0
        for listener in listeners:
            listener(trace)
        if summary_due:
            logger.info("%s", self.summary_line())

    def summary_line(self) -> str:
        """Requests, latency and TTFA p50, RTF, chars/s, CPU, RSS and GPU use over the recent window."""
        stats = self.window.stats()
        system = self.system.summary(time.monotonic() - stats.span_s)
        parts = [
            f"requests={stats.requests}",
            f"errors={stats.errors}",
            f"latency_p50={_ms(stats.latency_p50_s)}",
            f"ttfa_p50={_ms(stats.ttfa_p50_s)}",
            f"rtf_p50={_fixed(stats.rtf_p50, 3)}",
            f"chars_per_s_p50={_fixed(stats.chars_per_s_p50, 0)}",
        ]
        if system is not None:
            parts += [f"cpu_cores={system.process_cpu_cores:.2f}", f"rss_mb={system.rss_bytes / 2**20:.0f}"]
            gpu = "none" if system.gpu_utilization is None else f"{system.gpu_utilization:.0%}"
            parts.append(f"gpu_util={gpu}")
        return "summary " + " ".join(parts)

    def _record_speech(self, trace: RequestTrace, record: RequestRecord) -> None:
        metrics = self.metrics
        engine = trace.engine
        for stage, seconds in record.stages.items():
            metrics.stage_duration.labels(stage).observe(seconds)
        if record.ttfa_s is not None:
            metrics.time_to_first_audio.labels(engine).observe(record.ttfa_s)
        if record.audio_s > 0:
            metrics.rtf.labels(engine).observe(record.total_s / record.audio_s)
            metrics.audio_seconds.labels(engine).inc(record.audio_s)
        if record.total_s > 0:
            metrics.chars_per_second.labels(engine).observe(record.input_chars / record.total_s)
        metrics.input_chars.inc(record.input_chars)

    def _export_sample(self, sample: SystemSample) -> None:
        self.metrics.process_threads.set(sample.threads)
        self.metrics.process_cpu.set(sample.process_cpu_cores)
        self.metrics.system_cpu.set(sample.system_cpu_ratio)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
