"""`voxserve serve | say | convert | voices | keys | job | tune | bench | profile | cluster`: the `app` and its
wiring; each command lives in the module of its concern (`serving`, `speech`, `keys`, `jobs`, `tuning`,
`profiling`, `cluster`)."""

from __future__ import annotations

import typer

from voxserve.bench.command import bench_app
from voxserve.cli.cluster import cluster_app
from voxserve.cli.jobs import job_app
from voxserve.cli.keys import keys_app
from voxserve.cli.profiling import profile_app
from voxserve.cli.serving import serve
from voxserve.cli.speech import convert, say, voices_app
from voxserve.cli.tuning import tune

__all__ = ["app"]

app = typer.Typer(help="voxserve: a self-hosted, OpenAI-compatible speech server.", no_args_is_help=True)
# Commands show in `--help` in the order they are added, then the groups in theirs.
app.command()(serve)
app.command()(say)
app.command()(convert)
app.command()(tune)
app.add_typer(bench_app, name="bench")
app.add_typer(profile_app, name="profile")
app.add_typer(voices_app, name="voices")
app.add_typer(keys_app, name="keys")
app.add_typer(job_app, name="job")
app.add_typer(cluster_app, name="cluster")
