"""The ASGI middleware that opens every request's trace on arrival, times the writes of its body and hands the
finished request to telemetry (with its route and status; a stream that failed after it started counts as the
error it failed with, and a request whose client left before the response ended as 499)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.api.state import TRACE_KEY, AppState, sane_request_id
from voxserve.api.streaming import stream_error
from voxserve.errors import ClientDisconnectedError

CLIENT_CLOSED_REQUEST = ClientDisconnectedError.status_code  # 499, as nginx logs it


class TelemetryMiddleware:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        telemetry = self._state.services.telemetry if self._state.services else None
        if scope["type"] != "http" or telemetry is None or not telemetry.enabled:
            await self.app(scope, receive, send)
            return
        trace = telemetry.new_trace(_request_id(scope))
        scope.setdefault("state", {})[TRACE_KEY] = trace
        status = 500  # what the client gets if the app raises past every handler
        ended = left = False  # the response's last byte went out; the client left before that

        async def receive_watched() -> Message:
            nonlocal left
            message = await receive()
            left = left or (message["type"] == "http.disconnect" and not ended)
            return message

        async def send_timed(message: Message) -> None:
            nonlocal status, ended, left
            if message["type"] == "http.response.start":
                status = message["status"]
            try:
                if message["type"] == "http.response.body" and message.get("body"):
                    with trace.stage("write"):
                        await send(message)
                else:
                    await send(message)
            except OSError:  # the server tells of a closed connection this way (ASGI 2.4)
                left = True
                raise
            ended = message["type"] == "http.response.body" and not message.get("more_body", False)

        try:
            await self.app(scope, receive_watched, send_timed)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            if left:
                # Whatever the app answered (an error about the half-read body, a stream cut short), nobody
                # read it: the request counts as cancelled by its client.
                status = CLIENT_CLOSED_REQUEST
                telemetry.metrics.cancelled_requests.inc()
            elif (failure := stream_error(scope)) is not None:
                # A stream that failed after its 200 went out is counted under the status it failed with.
                status = failure.status_code
                telemetry.metrics.truncated_responses.labels(route, failure.code or "internal_error").inc()
            telemetry.observe(route, status, trace, trace.elapsed_s())


def _request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return sane_request_id(value.decode("latin-1"))
    return None
