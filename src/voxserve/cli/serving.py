"""`voxserve serve`, and the uvicorn server it runs (which `voxserve job --in-process` runs too)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from voxserve.cli.config import ConfigOption, VoicesDirOption, load_settings_or_exit
from voxserve.cli.console import console
from voxserve.process import limit_malloc_arenas
from voxserve.service.bootstrap import build_access
from voxserve.settings import Settings

if TYPE_CHECKING:
    import uvicorn

    from voxserve.api.state import AppState


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    voices_dir: VoicesDirOption = None,
    insecure_no_auth: Annotated[
        bool | None, typer.Option("--insecure-no-auth", help="Serve a non-loopback bind without API keys.")
    ] = None,
    wyoming: Annotated[
        str | None, typer.Option(help="Serve Home Assistant's Wyoming protocol too, e.g. tcp://127.0.0.1:10200.")
    ] = None,
    wyoming_zeroconf: Annotated[
        bool | None, typer.Option("--wyoming-zeroconf", help="Announce the Wyoming server over zeroconf.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the HTTP server (and the Wyoming server, with --wyoming)."""
    settings = load_settings_or_exit(
        config, host=host, port=port, voices_dir=voices_dir, insecure_no_auth=insecure_no_auth,
        wyoming_uri=wyoming, wyoming_zeroconf=wyoming_zeroconf,
    )  # fmt: skip
    prepare_to_serve(settings)
    limit_malloc_arenas(settings.malloc_arena_max)
    server, state = uvicorn_server(settings, settings.port)
    server.run()
    if not server.started:
        raise typer.Exit(3)  # start-up failed; uvicorn has logged why
    if state.fatal is not None:
        console.print(f"[red]error:[/red] {state.fatal}")
        raise typer.Exit(1)


def prepare_to_serve(settings: Settings) -> None:
    """Refuse (exit 2) a bind that would expose the API without keys; then set up logging."""
    from voxserve.api.guard import exposure_problem

    access = build_access(settings)
    problem = exposure_problem(settings.host, access.required, settings.insecure_no_auth)
    access.store.close()
    if problem:
        console.print(f"[red]error:[/red] {problem}")
        raise typer.Exit(2)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def uvicorn_server(settings: Settings, port: int) -> tuple[uvicorn.Server, AppState]:
    """The app built from `settings`, served by uvicorn on `settings.host` and `port` (0: any free one); a failed
    warm-up stops it (then `state.fatal` says why)."""
    import uvicorn

    from voxserve.api.app import create_app

    application = create_app(settings)
    # Without a bound, one client following a job (or any open stream) would hold a stopping server for hours.
    config = uvicorn.Config(
        application, host=settings.host, port=port, log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )  # fmt: skip
    server = uvicorn.Server(config)
    state: AppState = application.state.voxserve
    state.on_fatal = lambda: setattr(server, "should_exit", True)
    return server, state
