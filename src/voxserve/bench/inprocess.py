"""The in-process baseline: the corpus straight through the Piper engine, no HTTP, no scheduler, for each
workers x threads configuration. It is the limit a server is measured against."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from voxserve.bench.records import percentiles
from voxserve.engines.base import Engine, PreparedSegment
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.service.bootstrap import build_engines
from voxserve.settings import Settings, available_cores
from voxserve.types import SynthesisParams


@dataclass(slots=True)
class InProcessResult:
    workers: int
    threads: int
    audio_s_per_wall_s: float
    latency_s: dict[str, float]
    batch_size: int = 1


def default_configs(cores: int | None = None) -> list[tuple[int, int]]:
    """Every workers x threads pair that fits the cores."""
    cores = cores or available_cores()
    return [(workers, threads) for workers in range(1, cores + 1) for threads in range(1, cores // workers + 1)]


def _engine(settings: Settings, workers: int, threads: int, batch_size: int) -> Engine:
    update = {"workers": workers, "intra_op_threads": threads, "solo_intra_op_threads": threads,
              "max_batch_size": batch_size, "espeak_voices": False}  # fmt: skip
    return build_engines(settings.model_copy(update=update), EspeakPhonemizer(0)).engines[0]


def _saturate(
    engine: Engine, segments: Sequence[PreparedSegment], workers: int, batch_size: int, sample_rate: int
) -> float:
    """`workers` threads take the next batch until none is left; batches group texts of similar length, as the
    scheduler's length bucketing does."""
    by_length = sorted(segments, key=lambda segment: len(segment.phoneme_ids))
    batches = [by_length[start : start + batch_size] for start in range(0, len(by_length), batch_size)]
    next_index, audio_samples, lock = 0, 0, threading.Lock()

    def work() -> None:
        nonlocal next_index, audio_samples
        while True:
            with lock:
                if next_index >= len(batches):
                    return
                batch = batches[next_index]
                next_index += 1
            samples = sum(len(audio.samples) for audio in engine.run(batch))
            with lock:
                audio_samples += samples

    threads = [threading.Thread(target=work) for _ in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return audio_samples / sample_rate / (time.perf_counter() - started)


def run_in_process(
    settings: Settings, texts: Sequence[str], configs: Sequence[tuple[int, int]], batch_size: int = 1,
    on_progress: Callable[[str], None] = lambda _: None,
) -> list[InProcessResult]:  # fmt: skip
    """For each configuration: c=1 latency of every text (sequential, whole text in one call) and saturated
    throughput (`workers` threads sharing one session, each taking the next `batch_size` texts)."""
    results = []
    for workers, threads in configs:
        on_progress(f"in-process {workers} worker(s) x {threads} thread(s), batch {batch_size}")
        engine = _engine(settings, workers, threads, batch_size)
        voice = next(voice for voice in engine.voices() if voice.id == settings.default_voice)
        segments = [engine.prepare(SynthesisParams(text=text, voice=voice)) for text in texts]
        engine.run(segments[:1])
        latencies = []
        for segment in segments:
            started = time.perf_counter()
            engine.run([segment])
            latencies.append(time.perf_counter() - started)
        throughput = _saturate(engine, segments, workers, batch_size, voice.sample_rate)
        results.append(InProcessResult(workers, threads, throughput, percentiles(latencies), batch_size))
    return results
