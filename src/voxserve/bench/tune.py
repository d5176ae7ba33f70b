"""`voxserve tune`: measure workers x threads on this machine and write the fastest settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from voxserve.bench.inprocess import InProcessResult


@dataclass(frozen=True, slots=True)
class TunedSettings:
    workers: int
    intra_op_threads: int
    solo_intra_op_threads: int
    max_batch_size: int

    def to_toml(self, results: Sequence[InProcessResult]) -> str:
        measured = "\n".join(
            f"#   {r.workers} x {r.threads}, batch {r.batch_size}: {r.audio_s_per_wall_s:.2f} audio-s/s, "
            f"c=1 p50 {r.latency_s['p50'] * 1000:.0f} ms"
            for r in results
        )
        return (
            "# written by `voxserve tune`; measured in-process on this machine:\n"
            f"{measured}\n"
            f"workers = {self.workers}\n"
            f"intra_op_threads = {self.intra_op_threads}\n"
            f"solo_intra_op_threads = {self.solo_intra_op_threads}\n"
            f"max_batch_size = {self.max_batch_size}\n"
        )


def choose(results: Sequence[InProcessResult]) -> TunedSettings:
    """Workers x threads x batch with the highest saturated throughput; for a segment running alone, the thread
    count with the lowest single-request latency (measured at batch 1)."""
    throughput = max(results, key=lambda result: result.audio_s_per_wall_s)
    latency = min((r for r in results if r.batch_size == 1), key=lambda result: result.latency_s["p50"])
    return TunedSettings(
        workers=throughput.workers,
        intra_op_threads=throughput.threads,
        solo_intra_op_threads=max(latency.threads, throughput.threads),
        max_batch_size=throughput.batch_size,
    )


def write_settings(path: Path, tuned: TunedSettings, results: Sequence[InProcessResult]) -> None:
    path.write_text(tuned.to_toml(results), encoding="utf-8")
