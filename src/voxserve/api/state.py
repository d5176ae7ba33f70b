"""What the routes depend on: the speech service once it is loaded and warm, telemetry, and each request's trace."""

from __future__ import annotations

import re
from typing import TypeVar

from fastapi import Request

from voxserve.errors import NotReadyError
from voxserve.obs.telemetry import Telemetry
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import AccessControl
from voxserve.service.conversion import ConversionService
from voxserve.service.diagnostics import Diagnostics
from voxserve.service.limits import KeyLimiter
from voxserve.service.profiling import Profiler
from voxserve.service.speech import SpeechService

T = TypeVar("T")
TRACE_KEY = "voxserve_trace"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class AppState:
    """Holds the service; `ready` turns true after every engine has run once."""

    def __init__(self) -> None:
        self.telemetry: Telemetry | None = None
        self.conversion: ConversionService | None = None
        self.speech: SpeechService | None = None
        self.diagnostics: Diagnostics | None = None
        self.profiler: Profiler | None = None
        self.access: AccessControl | None = None
        self.limiter: KeyLimiter | None = None
        self.ready = False


def get_state(request: Request) -> AppState:
    return request.app.state.voxserve


def get_speech(request: Request) -> SpeechService:
    state = get_state(request)
    if state.speech is None or not state.ready:
        raise NotReadyError("voices are still loading; retry shortly")
    return state.speech


def get_conversion(request: Request) -> ConversionService:
    get_speech(request)
    return _loaded(get_state(request).conversion)


def get_diagnostics(request: Request) -> Diagnostics:
    return _loaded(get_state(request).diagnostics)


def get_profiler(request: Request) -> Profiler:
    return _loaded(get_state(request).profiler)


def get_telemetry(request: Request) -> Telemetry:
    return _loaded(get_state(request).telemetry)


def _loaded(part: T | None) -> T:
    """A part of the server that start-up has built, or 503 while it has not."""
    if part is None:
        raise NotReadyError("the server is starting; retry shortly")
    return part


def get_trace(request: Request) -> RequestTrace:
    """The trace the middleware opened when the request arrived (a disabled one when telemetry is off)."""
    trace = getattr(request.state, TRACE_KEY, None)
    if trace is None:
        trace = RequestTrace(sane_request_id(request.headers.get("x-request-id")), enabled=False)
    return trace


def sane_request_id(value: str | None) -> str | None:
    """The client's `X-Request-Id` when it is a sane token (it is echoed back and logged); else `None`, and the
    server makes one."""
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None
