"""`voxserve bench` and `voxserve bench compare`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from voxserve.bench.compare import compare_reports
from voxserve.bench.corpus import load_corpus
from voxserve.bench.inprocess import default_configs, run_in_process
from voxserve.bench.load import Target, check_loopback, run_level
from voxserve.bench.probe import MetricsProbe, ProcessProbe
from voxserve.bench.records import summarize
from voxserve.bench.report import BenchReport, render
from voxserve.errors import VoxError
from voxserve.settings import load_settings

bench_app = typer.Typer(help="Measure a speech server (ours or any other) and compare runs.")
console = Console(stderr=True)
DEFAULT_URL = "http://127.0.0.1:8000/v1/audio/speech"


def _wide_console() -> Console:
    """Tables are wide; when stdout is not a terminal, do not squeeze them into 80 columns."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=200)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"expected numbers separated by commas: {text!r}") from exc
    if any(value < 1 for value in values):
        raise typer.BadParameter("values must be positive")
    return values


def _configs(text: str | None) -> list[tuple[int, int]]:
    if not text:
        return default_configs()
    try:
        return [(int(w), int(t)) for w, t in (part.split("x") for part in text.split(","))]
    except ValueError as exc:
        raise typer.BadParameter(f"expected WORKERSxTHREADS,...: {text!r}") from exc


def _server_probe(url: str, server_pid: int | None) -> ProcessProbe | MetricsProbe | None:
    if server_pid is not None:
        return ProcessProbe(server_pid)
    metrics_url = httpx.URL(url).copy_with(path="/metrics", query=None)
    try:
        response = httpx.get(metrics_url, timeout=2)
    except httpx.HTTPError:
        return None
    if response.status_code == 200 and "process_cpu_seconds_total" in response.text:
        return MetricsProbe(str(metrics_url))
    return None


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="Speech endpoint to load.")] = DEFAULT_URL,
    corpus: Annotated[Path | None, typer.Option(help="One utterance per line; default: a built-in corpus.")] = None,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, e.g. 1,2,4,8,16.")] = "1,2,4,8,16",
    requests: Annotated[int, typer.Option(help="Requests per level (0: 6 x concurrency, at least 24).")] = 0,
    duration: Annotated[float, typer.Option(help="Longest a level may run, seconds.")] = 60.0,
    warmup: Annotated[int, typer.Option(help="Unrecorded requests first (cold caches and arenas).")] = 10,
    response_format: Annotated[str, typer.Option("--format", help="response_format to ask for.")] = "mp3",
    voice: Annotated[str, typer.Option(help="voice to ask for.")] = "alloy",
    model: Annotated[str, typer.Option(help="model to ask for.")] = "tts-1",
    stream: Annotated[bool, typer.Option(help="Streamed responses (--no-stream asks for whole bodies).")] = True,
    cache: Annotated[bool, typer.Option(help="Let the server answer from its audio cache (default: bypass).")] = False,
    template: Annotated[str | None, typer.Option(help="JSON body with {text}, for other APIs.")] = None,
    server_pid: Annotated[int | None, typer.Option(help="Server process to watch (CPU, RSS).")] = None,
    allow_remote: Annotated[bool, typer.Option(help="Allow a target that is not this machine.")] = False,
    in_process: Annotated[bool, typer.Option(help="Also measure the engine in-process (the baseline).")] = False,
    configs: Annotated[str | None, typer.Option(help="In-process WORKERSxTHREADS list, e.g. 1x2,2x1.")] = None,
    sweep: Annotated[bool, typer.Option(help="--no-sweep measures in-process only.")] = True,
    output: Annotated[Path, typer.Option("-o", "--output", help="JSON report with every record.")] = Path(
        "bench-report.json"
    ),
    plots: Annotated[Path | None, typer.Option(help="Directory for PNG plots.")] = None,
    config: Annotated[Path | None, typer.Option(help="Settings file for the in-process engine.")] = None,
) -> None:
    """Sweep concurrency levels against URL and report latency, time to first audio, throughput and resources."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        check_loopback(url, allow_remote)
        texts = load_corpus(corpus)
        headers = {} if cache else {"Cache-Control": "no-store"}
        target = Target(url, model, voice, response_format, stream, template, headers)
        report = BenchReport(
            target={
                "url": url,
                "format": response_format,
                "voice": voice,
                "model": model,
                "stream": stream,
                "template": template,
                "corpus": str(corpus or "built-in"),
            }
        )
        if in_process:
            settings = load_settings(config)
            report.in_process = run_in_process(settings, texts, _configs(configs), on_progress=console.log)
        if sweep:
            levels = _int_list(concurrency)
            asyncio.run(_sweep(report, target, texts, levels, requests, duration, warmup, server_pid))
    except VoxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    report.compute_ratios()
    render(report, _wide_console())
    report.save(output)
    console.print(f"report: {output}")
    if plots is not None:
        from voxserve.bench.plot import save_plots

        for path in save_plots(report, plots):
            console.print(f"plot: {path}")


async def _sweep(
    report: BenchReport, target: Target, texts: list[str], levels: list[int], requests: int, duration: float,
    warmup: int, server_pid: int | None,
) -> None:  # fmt: skip
    if warmup:
        await run_level(target, texts, 1, max_requests=warmup, max_duration_s=duration)
    server = _server_probe(target.url, server_pid)
    client = ProcessProbe(os.getpid())
    counts = {level: requests or max(24, 6 * level) for level in levels}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for level in levels:
            task = progress.add_task(f"concurrency {level}", total=counts[level])
            if server is not None:
                server.start()
            client.start()
            records, wall_s = await run_level(
                target, texts, level, max_requests=counts[level], max_duration_s=duration,
                on_request=lambda _, task=task: progress.advance(task),
            )  # fmt: skip
            summary = summarize(level, records, wall_s)
            summary.client = client.stop()
            if server is not None:
                summary.server = server.stop()
            report.levels.append(summary)
            report.records[level] = records


@bench_app.command("compare")
def compare(
    before: Annotated[Path, typer.Argument(help="Baseline report (JSON).")],
    after: Annotated[Path, typer.Argument(help="New report (JSON).")],
    threshold: Annotated[float, typer.Option(help="Fraction by which a metric may worsen.")] = 0.10,
) -> None:
    """Ratios AFTER / BEFORE per level; exits 1 when a metric regressed beyond the threshold."""
    try:
        rows = compare_reports(before, after, threshold)
    except VoxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    table = Table(title=f"{after.name} vs {before.name}")
    for column in ("conc", "metric", "before", "after", "after/before", ""):
        table.add_column(column, justify="right")
    for row in rows:
        ratio = f"{row.ratio:.3f}" if row.ratio is not None else "-"
        flag = "[red]REGRESSION[/red]" if row.regression else ""
        table.add_row(str(row.concurrency), row.metric, f"{row.before:.4g}", f"{row.after:.4g}", ratio, flag)
    _wide_console().print(table)
    if any(row.regression for row in rows):
        raise typer.Exit(1)
