"""API keys at the edge. `AuthenticationMiddleware` checks the key of every request but the open paths before
anything reads its body (401 comes before any 400); the route dependencies then check scopes: `require(scope)`,
and `metered(scope)`, which also counts the request against its key's limits and holds a stream slot until the
response has been sent."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import AsyncIterator, Callable
from typing import Literal

from fastapi import Depends, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.api.errors import error_response
from voxserve.api.state import AppState, get_access, get_limiter, request_id_of
from voxserve.errors import VoxError
from voxserve.service.access import Principal
from voxserve.service.limits import Lease
from voxserve.storage.keys import KeyLimits

LEASE_KEY = "voxserve_lease"
PRINCIPAL_KEY = "voxserve_principal"
UNLIMITED = KeyLimits(0, 0, 0)
# Probes, the schema, the playground's static page (it holds no data: its calls carry the key the user types in)
# and /metrics (which has its own rule, `metrics_access`) answer without a key.
OPEN_PATHS = frozenset({
    "/health", "/ready", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/",
})  # fmt: skip
OPEN_PREFIXES = ("/ui/",)


@functools.cache
def require(scope: str) -> Callable[[Request], Principal]:
    """A dependency: the request's principal, which must hold `scope`."""

    def authorized(request: Request) -> Principal:
        access = get_access(request)
        principal = request.scope.get("state", {}).get(PRINCIPAL_KEY)
        if principal is None:
            principal = access.authenticate(request.headers.get("authorization"))
        access.authorize(principal, scope)
        return principal

    return authorized


@functools.cache
def metered(scope: str) -> Callable[..., AsyncIterator[Lease]]:
    """A dependency: `require(scope)`, then one request counted against the key's limits; the lease's headers
    go out with the response (see `LimitHeadersMiddleware`) and its stream slot is held until the body is sent."""

    async def leased(request: Request, principal: Principal = Depends(require(scope))) -> AsyncIterator[Lease]:
        limiter = get_limiter(request)
        lease = limiter.admit(principal.key_id or "", principal.limits if principal.key_id else UNLIMITED)
        request.scope.setdefault("state", {})[LEASE_KEY] = lease
        try:
            yield lease
        finally:
            lease.release()

    return leased


def metrics_access(mode: Literal["remote", "always", "never"]) -> Callable[[Request], None]:
    """`/metrics`: open to loopback clients (mode `remote`), or to everyone (`never`); else an admin key."""
    admin = require("admin")

    def checked(request: Request) -> None:
        if mode == "never" or (mode == "remote" and _from_loopback(request)):
            return
        admin(request)

    return checked


def _from_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LimitHeadersMiddleware:
    """Adds a metered request's `x-ratelimit-*` headers to its response, streamed or not."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            lease = scope.get("state", {}).get(LEASE_KEY)
            if message["type"] == "http.response.start" and lease is not None:
                headers = MutableHeaders(scope=message)
                for name, value in lease.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_limits)


class AuthenticationMiddleware:
    """Authenticates before routing and body parsing; the principal travels in the request's state."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self._state.services
        if scope["type"] == "http" and services is not None and _needs_key(scope):
            authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
            try:
                principal = services.access.authenticate(authorization)
            except VoxError as error:
                await error_response(error, request_id_of(scope))(scope, receive, send)
                return
            scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def _needs_key(scope: Scope) -> bool:
    """CORS preflights carry no credentials by design."""
    path = scope["path"]
    return scope["method"] != "OPTIONS" and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)
