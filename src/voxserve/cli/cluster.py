"""`voxserve cluster serve`: the same HTTP API on Ray Serve, model replicas spread over a Ray cluster (the `ray`
extra). Ray is imported only when the command runs."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from voxserve.cli.config import ConfigOption, VoicesDirOption, load_settings_or_exit
from voxserve.cli.console import console
from voxserve.cli.serving import prepare_to_serve

cluster_app = typer.Typer(help="Serve on a Ray cluster (pip install 'voxserve[ray]').", no_args_is_help=True)


@cluster_app.command("serve")
def cluster_serve(
    address: Annotated[str | None, typer.Option(help="Ray cluster address; default: start Ray here.")] = None,
    host: Annotated[str | None, typer.Option(help="Interface the HTTP proxy binds (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    replicas: Annotated[int | None, typer.Option(help="Model replicas (the fewest, when autoscaling).")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Autoscale up to this many replicas.")] = None,
    replica_cpus: Annotated[float | None, typer.Option(help="CPUs per model replica.")] = None,
    replica_gpus: Annotated[float | None, typer.Option(help="GPUs per model replica.")] = None,
    voices_dir: VoicesDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Deploy the ingress and the model replicas, and serve until interrupted."""
    settings = load_settings_or_exit(
        config, cluster_address=address, host=host, port=port, cluster_replicas=replicas,
        cluster_max_replicas=max_replicas, cluster_replica_cpus=replica_cpus, cluster_replica_gpus=replica_gpus,
        voices_dir=voices_dir,
    )  # fmt: skip
    prepare_to_serve(settings)
    try:
        import ray
        from ray import serve

        from voxserve.cluster.app import APP_NAME, build_application
    except ImportError as exc:
        console.print(f"[red]error:[/red] the cluster needs Ray Serve: pip install 'voxserve[ray]' ({exc})")
        raise typer.Exit(2) from exc
    ray.init(address=settings.cluster_address, include_dashboard=False)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
    console.print(f"voxserve on Ray Serve at http://{settings.host}:{settings.port}/ (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
