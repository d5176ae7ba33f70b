"""What the routes depend on: the services once built (and warm), and each request's trace."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import Request
from starlette.types import Scope

from voxserve.errors import NotReadyError
from voxserve.obs.telemetry import Telemetry
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import AccessControl
from voxserve.service.bootstrap import Services
from voxserve.service.conversion import ConversionService
from voxserve.service.diagnostics import Diagnostics
from voxserve.service.jobs import JobService
from voxserve.service.limits import KeyLimiter
from voxserve.service.profiling import Profiler
from voxserve.service.speech import SpeechService

TRACE_KEY = "voxserve_trace"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class AppState:
    """Holds the services once built; `ready` turns true after every engine has run once. `fatal` says why the
    server cannot serve (a failed warm-up of the default voice); `on_fatal` is how it asks to be stopped."""

    def __init__(self) -> None:
        self.services: Services | None = None
        self.ready = False
        self.fatal: str | None = None
        self.on_fatal: Callable[[], None] | None = None


def get_state(request: Request) -> AppState:
    return request.app.state.voxserve


def get_services(request: Request) -> Services:
    """The services, or 503 while start-up has not built them."""
    services = get_state(request).services
    if services is None:
        raise NotReadyError("the server is starting; retry shortly")
    return services


def get_speech(request: Request) -> SpeechService:
    """The speech service once warm; 503 before."""
    services = get_services(request)
    if not get_state(request).ready:
        raise NotReadyError("voices are still loading; retry shortly")
    return services.speech


def get_conversion(request: Request) -> ConversionService:
    get_speech(request)
    return get_services(request).conversion


def get_jobs(request: Request) -> JobService:
    return get_services(request).jobs


def get_diagnostics(request: Request) -> Diagnostics:
    return get_services(request).diagnostics


def get_profiler(request: Request) -> Profiler:
    return get_services(request).profiler


def get_telemetry(request: Request) -> Telemetry:
    return get_services(request).telemetry


def get_access(request: Request) -> AccessControl:
    return get_services(request).access


def get_limiter(request: Request) -> KeyLimiter:
    return get_services(request).limiter


def get_trace(request: Request) -> RequestTrace:
    """The trace the middleware opened when the request arrived (a disabled one when telemetry is off)."""
    trace = getattr(request.state, TRACE_KEY, None)
    if trace is None:
        trace = RequestTrace(sane_request_id(request.headers.get("x-request-id")), enabled=False)
    return trace


def request_id_of(scope: Scope) -> str:
    """The id of a request that middleware answers itself: its trace's, else the client's sane `X-Request-Id`,
    else a new one."""
    trace = scope.get("state", {}).get(TRACE_KEY)
    if trace is not None:
        return trace.request_id
    given = next((value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"x-request-id"), None)
    return RequestTrace(sane_request_id(given), enabled=False).request_id


def sane_request_id(value: str | None) -> str | None:
    """The client's `X-Request-Id` when it is a sane token (it is echoed back and logged); else `None`, and the
    server makes one."""
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None
