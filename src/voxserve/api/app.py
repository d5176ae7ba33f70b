"""The FastAPI application: lifespan (load, warm up, shut down), the middleware stack and the routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from voxserve import __version__
from voxserve.api import catalog, conversions, diagnostics, health, keys, metrics, speech, voices
from voxserve.api.access import LimitHeadersMiddleware
from voxserve.api.errors import install_error_handlers
from voxserve.api.guard import GuardMiddleware, guard_options
from voxserve.api.middleware import TelemetryMiddleware
from voxserve.api.state import AppState
from voxserve.service.bootstrap import (
    build_access,
    build_conversion_service,
    build_limiter,
    build_speech_service,
    build_telemetry,
)
from voxserve.service.diagnostics import Diagnostics
from voxserve.service.profiling import Profiler
from voxserve.settings import Settings

logger = logging.getLogger(__name__)
UPLOAD_PATHS = frozenset({"/v1/audio/voices", "/v1/audio/conversions"})
EXPOSED_HEADERS = ["Server-Timing", "X-Request-Id", "X-Voxserve-Voice", "X-Voxserve-Sample-Rate", "X-Voxserve-Cache"]


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app. Voices load before it serves; it reports ready once they are warmed up."""
    state = AppState()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.access, state.limiter = build_access(settings), build_limiter(settings)
        telemetry = state.telemetry = build_telemetry(settings)
        telemetry.start()
        loop_lag = asyncio.create_task(telemetry.loop_lag.watch()) if telemetry.enabled else None
        speech = state.speech = await asyncio.to_thread(build_speech_service, settings, telemetry)
        conversion = state.conversion = build_conversion_service(speech, settings)
        state.diagnostics = Diagnostics(speech, settings)
        profiler = state.profiler = Profiler(
            speech.registry.engines(), telemetry, settings.profile_dir, keep=settings.profile_keep
        )
        warmup = asyncio.create_task(_warm_up(state, settings))
        try:
            yield
        finally:
            warmup.cancel()
            if loop_lag is not None:
                loop_lag.cancel()
            await asyncio.to_thread(profiler.close)
            await conversion.close()
            await asyncio.to_thread(speech.close)
            state.access.store.close()
            telemetry.stop()

    app = FastAPI(title="voxserve", version=__version__, lifespan=lifespan)
    app.state.voxserve = state
    for module in (speech, voices, conversions, catalog, health, keys):
        app.include_router(module.router)
    if settings.metrics_endpoint:
        app.include_router(metrics.router_for(settings.metrics_auth))
    if settings.diagnostics_endpoints:
        app.include_router(diagnostics.router)
    _add_middleware(app, state, settings)
    install_error_handlers(app)
    return app


def _add_middleware(app: FastAPI, state: AppState, settings: Settings) -> None:
    """Outermost last: CORS answers preflights, telemetry sees every request, the guard runs before any route."""
    guard = guard_options(
        settings.host, settings.allowed_hosts, settings.cors_origins, settings.max_json_body_bytes,
        settings.max_upload_bytes, UPLOAD_PATHS,
    )  # fmt: skip
    app.add_middleware(LimitHeadersMiddleware)
    app.add_middleware(GuardMiddleware, options=guard)
    app.add_middleware(TelemetryMiddleware, state=state)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id", "Cache-Control", "X-Voxserve-Cache"],
            expose_headers=EXPOSED_HEADERS,
        )  # fmt: skip


async def _warm_up(state: AppState, settings: Settings) -> None:
    if settings.warmup and state.speech is not None:
        await asyncio.to_thread(state.speech.warmup)
    if state.speech is not None and state.speech.library is not None:
        await asyncio.to_thread(state.speech.library.preload)
    state.ready = True
    logger.info("voxserve ready")
