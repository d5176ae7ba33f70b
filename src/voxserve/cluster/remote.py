"""`RemoteEngine`: an engine whose model calls run on Ray Serve replicas.

The ingress keeps everything around the model: text normalization, segmentation, phonemization (the local
engine's `prepare`), the scheduler (admission, first-segment priority, batching, deadlines, cancellation of queued
work), conversion, loudness, encoding and the caches. Only `run`, the model call (about 90 % of a request's
CPU time), goes over a deployment handle to whichever replica Ray's router picks; the replica answers with the
audio and its own id, which the ingress counts per replica for `/metrics` and the diagnostics."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from voxserve.engines.base import Engine, EngineProfile, PreparedSegment, SegmentAudio
from voxserve.errors import EngineError, VoxError
from voxserve.types import SynthesisParams, VoiceInfo


@dataclass(frozen=True, slots=True)
class ReplicaResult:
    """What a replica answers for one model call: the audio (or the error it raised), who ran it and for how
    long, measured inside the replica."""

    replica: str
    node: str
    audio: list[SegmentAudio]
    seconds: float
    error: VoxError | None = None


ReplicaCall = Callable[[str, list[PreparedSegment], bool], ReplicaResult]


@dataclass(slots=True)
class _ReplicaCounts:
    node: str
    calls: int = 0
    segments: int = 0
    seconds: float = 0.0


@dataclass
class ReplicaStats:
    """Model calls per replica and engine, as the ingress saw them come back; safe across worker threads."""

    _counts: dict[tuple[str, str], _ReplicaCounts] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, result: ReplicaResult, engine: str, segments: int) -> None:
        with self._lock:
            counts = self._counts.setdefault((result.replica, engine), _ReplicaCounts(result.node))
            counts.calls += 1
            counts.segments += segments
            counts.seconds += result.seconds

    def snapshot(self, engine: str | None = None) -> list[dict[str, object]]:
        with self._lock:
            return [
                {"replica": replica, "engine": name, "node": counts.node, "calls": counts.calls,
                 "segments": counts.segments, "model_seconds": round(counts.seconds, 3)}
                for (replica, name), counts in sorted(self._counts.items())
                if engine is None or name == engine
            ]  # fmt: skip


class ReplicaCollector(Collector):
    """`voxserve_replica_model_calls_total`, `voxserve_replica_segments_total` and
    `voxserve_replica_model_seconds_total`, labelled `replica`, `node` and `engine`: every replica's work in the
    ingress's one scrape."""

    def __init__(self, stats: ReplicaStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        labels = ["replica", "node", "engine"]
        calls = CounterMetricFamily("voxserve_replica_model_calls", "Model calls a replica ran.", labels=labels)
        segments = CounterMetricFamily("voxserve_replica_segments", "Segments a replica synthesized.", labels=labels)
        seconds = CounterMetricFamily(
            "voxserve_replica_model_seconds", "Seconds a replica spent in model calls.", labels=labels
        )
        for row in self._stats.snapshot():
            key = [str(row["replica"]), str(row["node"]), str(row["engine"])]
            calls.add_metric(key, float(row["calls"]))  # type: ignore[arg-type]
            segments.add_metric(key, float(row["segments"]))  # type: ignore[arg-type]
            seconds.add_metric(key, float(row["model_seconds"]))  # type: ignore[arg-type]
        yield from (calls, segments, seconds)


class RemoteEngine:
    """`local` prepares segments and names the voices; `call` runs a batch on a replica. Windows are off: a
    window's continuation lives in the memory of the replica that decoded the first one."""

    supports_windows = False

    def __init__(self, local: Engine, call: ReplicaCall, stats: ReplicaStats) -> None:
        self._local = local
        self._call = call
        self._stats = stats
        self.name = local.name
        self.supports_batching = local.supports_batching
        self.supports_instructions = local.supports_instructions
        self.supports_timestamps = local.supports_timestamps

    def voices(self) -> Sequence[VoiceInfo]:
        return self._local.voices()

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        return self._local.prepare(params)

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        try:
            result = self._call(self.name, list(batch), solo)
        except Exception as exc:
            raise EngineError(f"the model replica failed ({type(exc).__name__})") from exc
        if result.error is not None:
            raise result.error
        self._stats.record(result, self.name, len(batch))
        return result.audio

    def warmup(self) -> None:
        """Replicas warm their own engines before Ray routes to them."""

    def runtime_info(self) -> dict[str, object]:
        replicas = self._stats.snapshot(self.name)
        return {"runtime": "ray serve", "replicas": replicas, "local": self._local.runtime_info()}

    def start_profiling(self, directory: Path) -> None:
        """Replica runtimes are not profiled from the ingress."""

    def stop_profiling(self) -> list[EngineProfile]:
        return []

    def release_memory(self) -> None:
        self._local.release_memory()
