"""PNG plots of a report: latency and time to first audio, and throughput, against concurrency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxserve.bench.report import BenchReport
from voxserve.errors import ConfigError


def save_plots(report: BenchReport, directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError as exc:
        raise ConfigError("plots need matplotlib: pip install 'voxserve[bench]'") from exc
    directory.mkdir(parents=True, exist_ok=True)
    levels = [level for level in report.levels if level.latency_s]
    concurrency = [level.concurrency for level in levels]

    def save(name: str, title: str, ylabel: str, draw: Callable[[Any], None]) -> Path:
        figure, axis = plt.subplots(figsize=(7, 4.5))
        draw(axis)
        axis.set(xlabel="concurrency", ylabel=ylabel, title=title)
        axis.set_xscale("log", base=2)
        axis.set_xticks(concurrency, [str(c) for c in concurrency])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        path = directory / name
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path

    def draw_latency(axis: Any) -> None:
        for series, label in (("latency_s", "latency"), ("ttfa_s", "TTFA")):
            for key, style in (("p50", "-o"), ("p95", "--o")):
                values = [getattr(level, series).get(key, float("nan")) for level in levels]
                axis.plot(concurrency, values, style, label=f"{label} {key}")

    def draw_throughput(axis: Any) -> None:
        axis.plot(concurrency, [level.audio_s_per_wall_s for level in levels], "-o", label="server")
        if report.in_process:
            best = max(result.audio_s_per_wall_s for result in report.in_process)
            axis.axhline(best, linestyle="--", color="gray", label="best in-process")

    return [
        save("latency.png", "latency vs concurrency", "seconds", draw_latency),
        save("throughput.png", "throughput", "audio seconds per wall second", draw_throughput),
    ]
