"""A benchmark report: levels, in-process baselines, the ratios between them; as a rich table and as JSON."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from voxserve import __version__
from voxserve.bench.inprocess import InProcessResult
from voxserve.bench.records import LevelSummary, RequestRecord
from voxserve.settings import available_cores


@dataclass(slots=True)
class BenchReport:
    target: dict[str, object]
    levels: list[LevelSummary] = field(default_factory=list)
    records: dict[int, list[RequestRecord]] = field(default_factory=dict)
    in_process: list[InProcessResult] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    machine: dict[str, object] = field(
        default_factory=lambda: {
            "cores": available_cores(), "python": platform.python_version(), "platform": platform.platform(),
            "voxserve": __version__,
        }
    )  # fmt: skip
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def compute_ratios(self) -> None:
        """Server against the best in-process configuration: throughput at every concurrency, and latency at
        concurrency 1 against the fastest single-request configuration."""
        if not self.levels or not self.in_process:
            return
        best_throughput = max(result.audio_s_per_wall_s for result in self.in_process)  # any batch size
        for level in self.levels:
            self.ratios[f"throughput_c{level.concurrency}_vs_in_process"] = level.audio_s_per_wall_s / best_throughput
        single = [level for level in self.levels if level.concurrency == 1 and level.latency_s]
        if single:
            best_latency = min(result.latency_s["p50"] for result in self.in_process)
            self.ratios["c1_latency_p50_vs_in_process"] = single[0].latency_s["p50"] / best_latency

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")


def _ms(values: dict[str, float], key: str) -> str:
    return f"{values[key] * 1000:.0f}" if key in values else "-"


def _gb(value: int | None) -> str:
    return f"{value / 1e9:.2f}" if value else "-"


def render(report: BenchReport, console: Console) -> None:
    if report.levels:
        table = Table(title=f"voxserve bench: {report.target.get('url')}")
        for column in ("conc", "reqs", "err", "req/s", "audio s/s", "RTF p50", "lat p50 ms", "lat p95 ms",
                       "lat p99 ms", "TTFA p50 ms", "TTFA p95 ms", "gap p95 ms", "stalls (reqs)", "srv CPU",
                       "srv RSS GB",
                       "cli CPU"):  # fmt: skip
            table.add_column(column, justify="right")
        for level in report.levels:
            table.add_row(
                str(level.concurrency), str(level.requests), str(level.errors), f"{level.requests_per_s:.2f}",
                f"{level.audio_s_per_wall_s:.2f}", f"{level.rtf_p50:.3f}" if level.rtf_p50 else "-",
                _ms(level.latency_s, "p50"), _ms(level.latency_s, "p95"), _ms(level.latency_s, "p99"),
                _ms(level.ttfa_s, "p50"), _ms(level.ttfa_s, "p95"),
                f"{level.max_gap_s_p95 * 1000:.0f}" if level.max_gap_s_p95 is not None else "-",
                f"{level.stalls} ({level.requests_with_stall})",
                f"{level.server.cpu_cores:.2f}" if level.server.cpu_cores is not None else "-",
                _gb(level.server.peak_rss_bytes),
                f"{level.client.cpu_cores:.2f}" if level.client.cpu_cores is not None else "-",
            )  # fmt: skip
        console.print(table)
    if report.in_process:
        table = Table(title="in-process (no HTTP)")
        for column in ("workers x threads", "batch", "audio s/s", "c=1 lat p50 ms", "c=1 lat p95 ms"):
            table.add_column(column, justify="right")
        for result in report.in_process:
            table.add_row(
                f"{result.workers} x {result.threads}", str(result.batch_size), f"{result.audio_s_per_wall_s:.2f}",
                _ms(result.latency_s, "p50"), _ms(result.latency_s, "p95"),
            )  # fmt: skip
        console.print(table)
    for name, value in report.ratios.items():
        console.print(f"{name}: [bold]{value:.3f}[/bold]")
