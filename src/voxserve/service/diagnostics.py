"""What `/diagnostics/*` answers: a performance snapshot, a bottleneck diagnosis over the recent window, and a
controlled in-process benchmark on a fixed corpus (the numbers to compare two machines by)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import platform
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from voxserve.errors import ConflictError, InvalidRequestError
from voxserve.obs.bottleneck import Evidence, diagnose
from voxserve.obs.system import SystemSummary
from voxserve.obs.timeline import timeline
from voxserve.obs.trace import RequestTrace, sum_stages
from voxserve.obs.window import WindowStats, percentile
from voxserve.service.speech import SpeechJob, SpeechService
from voxserve.settings import available_cores

# The built-in benchmark corpus: fixed, so two machines (or two builds) run the same work. Short, medium and
# long utterances, plain prose, numbers and punctuation.
BENCHMARK_CORPUS = (
    "Your order has shipped.",
    "Please hold while I connect you to the next available agent.",
    "The meeting moved to Thursday at three thirty, in the large conference room on the second floor.",
    "Turn left in four hundred meters, then keep right at the fork and follow the signs for the airport.",
    "Chapter one. It was a bright cold day in April, and the clocks were striking thirteen. Winston hurried "
    "through the glass doors, though not quickly enough to prevent a swirl of gritty dust from entering along "
    "with him.",
    "Thanks for calling. Your balance is one hundred twenty-four dollars and sixteen cents, due on the fifth.",
    "Warning: the battery is low.",
    "In the beginning, the universe was created. This has made a lot of people very angry and been widely "
    "regarded as a bad move.",
)
MAX_BENCHMARK_S = 120.0
LIVE_BUCKETS = 60  # the live view's series: 60 buckets of `bucket_s`
MAX_BENCHMARK_CONCURRENCY = 16
_PACKAGES = ("voxserve", "onnxruntime", "numpy", "av", "soxr", "fastapi", "uvicorn", "prometheus-client",
             "nvidia-ml-py", "torch")  # fmt: skip


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, object]:
    memory = psutil.virtual_memory()
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "available_cores": available_cores(),
        "memory_total_bytes": memory.total,
        "memory_available_bytes": memory.available,
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@dataclass(frozen=True, slots=True)
class DiagnosticsOptions:
    """What the snapshot reports about the configuration (the composition root fills it from `Settings`)."""

    config: Mapping[str, object]  # every setting in force, secrets masked
    intra_op_threads: int
    solo_intra_op_threads: int


class Diagnostics:
    """Reads the service's telemetry; runs one benchmark at a time."""

    def __init__(self, speech: SpeechService, options: DiagnosticsOptions) -> None:
        self._speech = speech
        self._options = options
        self._benchmark_running = threading.Lock()

    def _window(self) -> tuple[WindowStats, SystemSummary | None, dict[str, float | None]]:
        telemetry = self._speech.telemetry
        stats = telemetry.window.stats()
        since = time.monotonic() - max(stats.span_s, 10.0)
        return stats, telemetry.system.summary(since), telemetry.loop_lag.summary(since)

    def performance(self) -> dict[str, object]:
        """Versions, runtimes, threads, config in force, machine, GPUs and the recent window, in one snapshot."""
        telemetry = self._speech.telemetry
        options = self._options
        stats, system, loop_lag = self._window()
        return {
            "versions": versions(),
            "engines": {engine.name: engine.runtime_info() for engine in self._speech.registry.engines()},
            "threads": {
                "workers": self._speech.scheduler.workers,
                "intra_op_threads": options.intra_op_threads,
                "solo_intra_op_threads": options.solo_intra_op_threads,
                "max_batch_size": self._speech.scheduler.options.max_batch_size,
            },
            "config": dict(options.config),
            "system": {**machine(), "recent": None if system is None else system.as_dict()},
            "gpu": {
                "available": telemetry.gpu.available,
                "reason": telemetry.gpu.reason or None,
                "driver": telemetry.gpu.driver or None,
                "devices": [gpu.as_dict() for gpu in telemetry.gpu.read()],
            },
            "queue": self._queue(),
            "event_loop_lag": loop_lag,
            "window": stats.as_dict(),
            "telemetry": telemetry.enabled,
        }

    def bottleneck(self) -> dict[str, object]:
        """The findings over the recent window, most severe first, with the numbers they rest on."""
        telemetry = self._speech.telemetry
        stats, system, loop_lag = self._window()
        evidence = Evidence(stats, system, loop_lag["p95_s"], telemetry.gpu.available)
        return {
            "window": stats.as_dict(),
            "system": None if system is None else system.as_dict(),
            "event_loop_lag": loop_lag,
            "findings": [finding.as_dict() for finding in diagnose(evidence)],
        }

    def _queue(self) -> dict[str, object]:
        scheduler = self._speech.scheduler
        return {"depth_segments": scheduler.queue_depth(), "pending_audio_s": round(scheduler.pending_audio_s(), 3)}

    def live(self, bucket_s: float = 5.0) -> dict[str, object]:
        """What a dashboard polls: the recent window as a series of `bucket_s` buckets, the queue now, the
        findings in words, and each GPU now."""
        telemetry = self._speech.telemetry
        now = time.monotonic()
        series = timeline(
            telemetry.window.records(), telemetry.system.samples(now - bucket_s * LIVE_BUCKETS), now, bucket_s,
            LIVE_BUCKETS,
        )  # fmt: skip
        latest = telemetry.system.samples(now - 2 * bucket_s)[-1:]
        return {
            "bucket_s": bucket_s,
            "timeline": series,
            "queue": self._queue(),
            "cpu": None
            if not latest
            else {
                "process_cores": round(latest[0].process_cpu_cores, 4),
                "system_ratio": round(latest[0].system_cpu_ratio, 4),
                "cores": len(latest[0].per_core_ratio),
            },
            "gpus": [gpu.as_dict() for gpu in (latest[0].gpus if latest else ())],
            **self.bottleneck(),
        }

    async def benchmark(
        self, seconds: float = 10.0, concurrency: int = 1, voice: str | None = None, response_format: str = "wav"
    ) -> dict[str, object]:
        """Synthesize the built-in corpus for up to `seconds` with `concurrency` requests in flight, cache
        bypassed; RTF, characters per second and the per-stage breakdown. 409 while another one runs."""
        if not 0 < seconds <= MAX_BENCHMARK_S:
            raise InvalidRequestError(f"seconds must be in (0, {MAX_BENCHMARK_S:g}]", param="seconds")
        if not 1 <= concurrency <= MAX_BENCHMARK_CONCURRENCY:
            raise InvalidRequestError(f"concurrency must be 1..{MAX_BENCHMARK_CONCURRENCY}", param="concurrency")
        voice = voice or self._speech.registry.default_voice.id
        self._speech.registry.resolve(voice, "tts-1")
        if not self._benchmark_running.acquire(blocking=False):
            raise ConflictError("a benchmark is already running")
        try:
            return await self._run_benchmark(seconds, concurrency, voice, response_format)
        finally:
            self._benchmark_running.release()

    async def _run_benchmark(
        self, seconds: float, concurrency: int, voice: str, response_format: str
    ) -> dict[str, object]:
        traces: list[RequestTrace] = []
        next_text = iter(range(1 << 30))
        started = time.perf_counter()
        stop_at = started + seconds

        async def client() -> None:
            while time.perf_counter() < stop_at:
                text = BENCHMARK_CORPUS[next(next_text) % len(BENCHMARK_CORPUS)]
                job = SpeechJob(text=text, voice=voice, response_format=response_format, use_cache=False)
                response = self._speech.open(job, RequestTrace())
                async for _ in response.encoded():
                    pass
                traces.append(response.trace)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        return _benchmark_report(traces, wall, seconds, concurrency, voice, response_format) | {
            "machine": machine(),
            "versions": versions(),
            "engines": {engine.name: engine.runtime_info() for engine in self._speech.registry.engines()},
        }


def _benchmark_report(
    traces: list[RequestTrace], wall_s: float, seconds: float, concurrency: int, voice: str, response_format: str
) -> dict[str, object]:
    audio_s = sum(trace.audio_s for trace in traces)
    chars = sum(trace.input_chars for trace in traces)
    stages = sum_stages(trace.stages() for trace in traces)
    busy = sum(duration for stage, duration in stages.items() if stage != "queue")
    latencies = np.array([trace.total_s() for trace in traces])
    ttfas = np.array([trace.first_audio_s for trace in traces if trace.first_audio_s is not None])
    count = max(len(traces), 1)
    return {
        "corpus": "built-in", "seconds": seconds, "concurrency": concurrency, "voice": voice,
        "response_format": response_format, "requests": len(traces), "wall_s": round(wall_s, 3),
        "audio_s": round(audio_s, 3), "input_chars": chars,
        "rtf": round(wall_s / audio_s, 4) if audio_s else None,
        "audio_s_per_s": round(audio_s / wall_s, 3) if wall_s else None,
        "chars_per_s": round(chars / wall_s, 1) if wall_s else None,
        "latency_p50_s": _percentile(latencies, 50), "latency_p95_s": _percentile(latencies, 95),
        "ttfa_p50_s": _percentile(ttfas, 50),
        "stages_ms_per_request": {stage: round(duration * 1000 / count, 3) for stage, duration in stages.items()},
        "stage_shares": {stage: round(duration / busy, 4) for stage, duration in stages.items()
                         if stage != "queue" and busy > 0},
    }  # fmt: skip


def _percentile(values: np.ndarray, q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value, 6)
