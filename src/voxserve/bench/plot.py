"""PNG plots of a report: latency and time to first audio, and throughput, against concurrency."""

from __future__ import annotations

from pathlib import Path

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
    latency_path, throughput_path = directory / "latency.png", directory / "throughput.png"

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for series, key, style in (("latency_s", "p50", "-o"), ("latency_s", "p95", "--o"), ("ttfa_s", "p50", "-s"),
                               ("ttfa_s", "p95", "--s")):  # fmt: skip
        values = [getattr(level, series).get(key, float("nan")) for level in levels]
        axis.plot(concurrency, values, style, label=f"{'latency' if series == 'latency_s' else 'TTFA'} {key}")
    axis.set(xlabel="concurrency", ylabel="seconds", title="latency vs concurrency")
    _concurrency_axis(axis, concurrency, NullFormatter())
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(latency_path, dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(concurrency, [level.audio_s_per_wall_s for level in levels], "-o", label="server")
    if report.in_process:
        best = max(result.audio_s_per_wall_s for result in report.in_process)
        axis.axhline(best, linestyle="--", color="gray", label="best in-process")
    axis.set(xlabel="concurrency", ylabel="audio seconds per wall second", title="throughput")
    _concurrency_axis(axis, concurrency, NullFormatter())
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(throughput_path, dpi=110)
    plt.close(figure)
    return [latency_path, throughput_path]


def _concurrency_axis(axis: object, concurrency: list[int], no_labels: object) -> None:
    axis.set_xscale("log", base=2)  # type: ignore[attr-defined]
    axis.set_xticks(concurrency, [str(c) for c in concurrency])  # type: ignore[attr-defined]
    axis.xaxis.set_minor_formatter(no_labels)  # type: ignore[attr-defined]
