"""`voxserve profile analyze | compare`: read profiler captures (GET /diagnostics/profiler/result)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from voxserve.cli.console import console
from voxserve.errors import VoxError
from voxserve.obs.profile_report import ProfileDigest, compare, digest, largest_stage_difference, load_trace

profile_app = typer.Typer(help="Read profiler captures (GET /diagnostics/profiler/result).", no_args_is_help=True)
TraceArgument = Annotated[Path, typer.Argument(help="A capture's Chrome trace JSON.", exists=True, dir_okay=False)]
TopOption = Annotated[int, typer.Option("--top", help="Rows per table.", min=1)]


def _read_capture(path: Path) -> ProfileDigest:
    try:
        return digest(load_trace(path))
    except VoxError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc


def _ranked_table(title: str, values: dict[str, float], top: int) -> Table:
    table = Table(title=title)
    for column in ("name", "ms / request", "share"):
        table.add_column(column, justify="left" if column == "name" else "right")
    total = sum(values.values()) or 1.0
    for name, ms in sorted(values.items(), key=lambda item: -item[1])[:top]:
        table.add_row(name, f"{ms:.2f}", f"{ms / total:.1%}")
    return table


@profile_app.command("analyze")
def profile_analyze(trace: TraceArgument, top: TopOption = 10) -> None:
    """The top stages, engine operators and Python functions of one capture, per request."""
    captured = _read_capture(trace)
    out = Console()
    out.print(f"{trace}: {captured.requests} request(s)")
    busy = {name: ms for name, ms in captured.stages_ms.items() if name != "queue"}
    out.print(_ranked_table("stages (busy time; queue wait not counted)", busy, top))
    if "queue" in captured.stages_ms:
        out.print(f"queue wait: {captured.stages_ms['queue']:.2f} ms / request")
    if captured.operators_ms:
        out.print(_ranked_table("engine operators", captured.operators_ms, top))
    if captured.functions_ms:
        out.print(_ranked_table("python functions (self time)", captured.functions_ms, top))


@profile_app.command("compare")
def profile_compare(before: TraceArgument, after: TraceArgument, top: TopOption = 10) -> None:
    """Where AFTER spends more or less time than BEFORE, per request, largest change first."""
    differences = compare(_read_capture(before), _read_capture(after))
    out = Console()
    table = Table(title=f"{after.name} vs {before.name} (ms per request)")
    for column in ("kind", "name", "before", "after", "delta", "ratio"):
        table.add_column(column, justify="left" if column in ("kind", "name") else "right")
    for difference in differences[:top]:
        ratio = "-" if difference.ratio is None else f"{difference.ratio:.2f}x"
        table.add_row(difference.kind, difference.name, f"{difference.before_ms:.2f}", f"{difference.after_ms:.2f}",
                      f"{difference.delta_ms:+.2f}", ratio)  # fmt: skip
    out.print(table)
    stage = largest_stage_difference(differences)
    if stage is not None:
        ratio = "" if stage.ratio is None else f", {stage.ratio:.2f}x"
        out.print(f"largest stage difference: {stage.name} ({stage.delta_ms:+.2f} ms per request{ratio})")
