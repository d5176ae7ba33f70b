"""The FastAPI application: lifespan (load, warm up, shut down) and the one place errors are rendered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from voxserve import __version__
from voxserve.api import catalog, conversions, diagnostics, health, metrics, speech, voices
from voxserve.api.middleware import TelemetryMiddleware
from voxserve.api.state import AppState
from voxserve.errors import InvalidRequestError, NotFoundError, VoxError
from voxserve.service.bootstrap import build_conversion_service, build_speech_service, build_telemetry
from voxserve.service.diagnostics import Diagnostics
from voxserve.service.profiling import Profiler
from voxserve.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app. Voices load before it serves; it reports ready once they are warmed up."""
    state = AppState()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        telemetry = state.telemetry = build_telemetry(settings)
        telemetry.start()
        loop_lag = asyncio.create_task(telemetry.loop_lag.watch()) if telemetry.enabled else None
        speech = state.speech = await asyncio.to_thread(build_speech_service, settings, telemetry)
        conversion = state.conversion = build_conversion_service(speech, settings)
        state.diagnostics = Diagnostics(speech, settings)
        profiler = state.profiler = Profiler(speech.registry.engines(), telemetry, settings.profile_dir)
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
            telemetry.stop()

    app = FastAPI(title="voxserve", version=__version__, lifespan=lifespan)
    app.state.voxserve = state
    routers = [speech, voices, conversions, catalog, health]
    routers += [metrics] if settings.metrics_endpoint else []
    routers += [diagnostics] if settings.diagnostics_endpoints else []
    for module in routers:
        app.include_router(module.router)
    app.add_middleware(TelemetryMiddleware, state=state)
    app.add_exception_handler(VoxError, _render_vox_error)
    app.add_exception_handler(RequestValidationError, _render_validation_error)
    app.add_exception_handler(HTTPException, _render_http_error)
    app.add_exception_handler(Exception, _render_unexpected_error)
    return app


async def _warm_up(state: AppState, settings: Settings) -> None:
    if settings.warmup and state.speech is not None:
        await asyncio.to_thread(state.speech.warmup)
    if state.speech is not None and state.speech.library is not None:
        await asyncio.to_thread(state.speech.library.preload)
    state.ready = True
    logger.info("voxserve ready")


async def _render_vox_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VoxError)
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers())


async def _render_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await _render_vox_error(request, _as_invalid_request(exc))


def _as_invalid_request(exc: RequestValidationError) -> InvalidRequestError:
    """The first problem pydantic found, in a client's words: which field, and what is wrong with it."""
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    kind = error.get("type", "")
    if kind == "json_invalid":
        return InvalidRequestError("the request body is not valid JSON", code="invalid_json")
    if not location:
        return InvalidRequestError("the request body must be a JSON object", code="invalid_body")
    param = location[0] if kind != "missing" or len(location) == 1 else ".".join(location)
    code = "missing_required_parameter" if kind == "missing" else "invalid_value"
    return InvalidRequestError(f"{'.'.join(location)}: {error.get('msg', 'invalid value')}", param=param, code=code)


async def _render_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error_class = NotFoundError if exc.status_code == 404 else InvalidRequestError
    error = error_class(str(exc.detail))
    error.status_code = exc.status_code
    return await _render_vox_error(request, error)


async def _render_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return await _render_vox_error(request, VoxError("internal server error"))
