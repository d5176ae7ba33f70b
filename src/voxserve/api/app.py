"""The FastAPI application: lifespan (load, warm up, shut down), the middleware stack and the routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from voxserve import __version__
from voxserve.api import (
    captions,
    catalog,
    conversions,
    diagnostics,
    health,
    jobs,
    keys,
    metrics,
    speech,
    text_stream,
    ui,
    voices,
)
from voxserve.api.access import AuthenticationMiddleware, LimitHeadersMiddleware
from voxserve.api.errors import install_error_handlers
from voxserve.api.guard import GuardMiddleware, guard_options
from voxserve.api.middleware import TelemetryMiddleware
from voxserve.api.state import AppState
from voxserve.api.wyoming import WyomingServer
from voxserve.process import prestarted_pool
from voxserve.service.bootstrap import Services, build_services
from voxserve.settings import Settings, available_cores

logger = logging.getLogger(__name__)
IO_THREADS = available_cores() + 4  # what asyncio would grow its default executor to on its own
UPLOAD_PATHS = frozenset({"/v1/audio/voices", "/v1/audio/conversions", "/v1/audio/jobs"})
EXPOSED_HEADERS = [
    "Server-Timing", "X-Request-Id", "X-Voxserve-Voice", "X-Voxserve-Sample-Rate", "X-Voxserve-Cache",
    "X-Voxserve-Result", "X-Voxserve-Job",
]  # fmt: skip


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The ASGI app around `services` (built from `settings` at start-up when not given). It serves once they
    are built and reports ready once they are warmed up; the app closes them when it stops."""
    state = AppState()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Phonemizing, encoding and name lookups run on the loop's executor: at its full size from the start, so
        # the server's thread count stays flat while it serves.
        asyncio.get_running_loop().set_default_executor(prestarted_pool(IO_THREADS, "voxserve-io"))
        built = state.services = services or await asyncio.to_thread(build_services, settings)
        built.telemetry.start()
        await built.jobs.start()
        loop_lag = asyncio.create_task(built.telemetry.loop_lag.watch()) if built.telemetry.enabled else None
        warmup = asyncio.create_task(_warm_up(state, built, run_engines=settings.warmup))
        wyoming = None
        if settings.wyoming_uri:
            wyoming = WyomingServer(settings.wyoming_uri, built, zeroconf=settings.wyoming_zeroconf)
            await wyoming.start()
        try:
            yield
        finally:
            if wyoming is not None:
                await wyoming.stop()
            warmup.cancel()
            if loop_lag is not None:
                loop_lag.cancel()
            await built.close()

    app = FastAPI(title="voxserve", version=__version__, lifespan=lifespan)
    app.state.voxserve = state
    for module in (speech, text_stream, captions, voices, conversions, jobs, catalog, health, keys):
        app.include_router(module.router)
    if settings.metrics_endpoint:
        app.include_router(metrics.router_for(settings.metrics_auth))
    if settings.diagnostics_endpoints:
        app.include_router(diagnostics.router)
    if settings.ui_enabled:
        app.include_router(ui.router)
    _add_middleware(app, state, settings)
    install_error_handlers(app)
    return app


def _add_middleware(app: FastAPI, state: AppState, settings: Settings) -> None:
    """Outermost last: CORS answers preflights, telemetry sees every request, the guard (host, origin, body size)
    runs before the key is checked, and the key before any route."""
    guard = guard_options(
        settings.host, settings.allowed_hosts, settings.cors_origins, settings.max_json_body_bytes,
        settings.max_upload_bytes, UPLOAD_PATHS,
    )  # fmt: skip
    app.add_middleware(LimitHeadersMiddleware)
    app.add_middleware(AuthenticationMiddleware, state=state)
    app.add_middleware(GuardMiddleware, options=guard)
    app.add_middleware(TelemetryMiddleware, state=state)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id", "Cache-Control", "X-Voxserve-Cache"],
            expose_headers=EXPOSED_HEADERS,
        )  # fmt: skip


async def _warm_up(state: AppState, services: Services, *, run_engines: bool) -> None:
    """Ready once warm; a warm-up that fails (the default voice cannot run) is logged with its cause and marks the
    server failed, which asks whoever serves it to stop (`voxserve serve` then exits non-zero)."""
    try:
        if run_engines:
            await asyncio.to_thread(services.warmup)
        elif services.speech.library is not None:
            await asyncio.to_thread(services.speech.library.preload)
    except Exception as exc:
        logger.critical("warm-up failed, the server cannot serve: %s", exc, exc_info=exc)
        state.fatal = f"warm-up failed: {exc}"
        if state.on_fatal is not None:
            state.on_fatal()
        return
    state.ready = True
    logger.info("voxserve ready")
