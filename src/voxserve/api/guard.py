"""`GuardMiddleware`: what a request must pass before any route sees it.

- `Host` must be one this server answers to: a web page that rebinds its DNS name to 127.0.0.1 still sends its
  own name, so it is refused (421).
- A state-changing request from a browser (`Origin` present) must come from an allowed origin or the server's
  own; a form on another site cannot drive it even when no key is set (403).
- The body is counted as it arrives and refused past the route's limit (413) before it is parsed or spooled:
  a small limit for JSON routes, the upload limit plus multipart overhead for upload routes, chunked or not."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.api.errors import error_response
from voxserve.api.state import request_id_of
from voxserve.errors import MisdirectedRequestError, PayloadTooLargeError, PermissionDeniedError, VoxError

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MULTIPART_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class GuardOptions:
    """`allowed_hosts` `None` = any host; `upload_paths` take files, every other route takes at most
    `max_json_body_bytes`."""

    allowed_hosts: frozenset[str] | None
    allowed_origins: frozenset[str]
    max_json_body_bytes: int
    max_upload_bytes: int
    upload_paths: frozenset[str]


def guard_options(
    host: str, allowed_hosts: list[str], cors_origins: list[str], max_json_body_bytes: int, max_upload_bytes: int,
    upload_paths: frozenset[str],
) -> GuardOptions:  # fmt: skip
    """Hosts default to the loopback names plus the bound host; a wildcard bind (0.0.0.0) with no list, or
    `*` in it, allows any (keys are then required: see `exposure_problem`)."""
    hosts: frozenset[str] | None
    if "*" in allowed_hosts or (not allowed_hosts and host in WILDCARD_BINDS):
        hosts = None
    else:
        hosts = frozenset(_bare_host(name) for name in allowed_hosts) | LOOPBACK_HOSTS | {_bare_host(host)}
    origins = frozenset(origin.rstrip("/").lower() for origin in cors_origins)
    return GuardOptions(hosts, origins, max_json_body_bytes, max_upload_bytes + MULTIPART_OVERHEAD_BYTES, upload_paths)


class GuardMiddleware:
    def __init__(self, app: ASGIApp, options: GuardOptions) -> None:
        self.app = app
        self._options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._guard_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())}
        limit = self._body_limit(scope)
        try:
            self._check_host(headers.get("host"))
            self._check_origin(scope["method"], headers.get("origin"), headers.get("host"))
            _check_declared_length(headers.get("content-length"), limit)
        except VoxError as error:
            await error_response(error, request_id_of(scope))(scope, receive, send)
            return
        await self._serve_bounded(scope, receive, send, limit)

    async def _guard_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A browser opens WebSockets to any site without asking (no CORS preflight): a handshake is held to the
        Host and Origin rules of a state-changing request, and refused (403) before it is accepted."""
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())}
        try:
            self._check_host(headers.get("host"))
            self._check_origin("WEBSOCKET", headers.get("origin"), headers.get("host"))
        except VoxError:
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)

    async def _serve_bounded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app on a body cut off at `limit`. Past it, whatever the app answers (it may have failed to
        parse a truncated body) is replaced by one 413, unless the response had already begun."""
        received = 0
        over_limit = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, over_limit
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over_limit = True
                    raise _too_large(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over_limit and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if not over_limit:
                raise
        if over_limit and not started:
            await error_response(_too_large(limit), request_id_of(scope))(scope, receive, send)

    def _body_limit(self, scope: Scope) -> int:
        if scope["path"] in self._options.upload_paths:
            return self._options.max_upload_bytes
        return self._options.max_json_body_bytes

    def _check_host(self, host: str | None) -> None:
        allowed = self._options.allowed_hosts
        if allowed is not None and host is not None and _bare_host(host) not in allowed:
            raise MisdirectedRequestError("this server does not answer to that Host; add it to allowed_hosts")

    def _check_origin(self, method: str, origin: str | None, host: str | None) -> None:
        if method in SAFE_METHODS or origin is None:
            return
        origin = origin.rstrip("/").lower()
        if origin in self._options.allowed_origins or _same_origin(origin, host):
            return
        raise PermissionDeniedError(
            "requests from this browser origin are not allowed; add it to cors_origins", code="origin_not_allowed"
        )


def exposure_problem(host: str, keys_exist: bool, insecure_no_auth: bool) -> str | None:
    """Why the server must not start on `host` (a non-loopback bind without API keys), or `None`."""
    if keys_exist or insecure_no_auth or _is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} without API keys: anyone who can reach it could use it. Create a key with "
        "`voxserve keys create --name NAME --scope speech --scope admin` (or set api_keys), or pass "
        "--insecure-no-auth to serve it open on purpose."
    )


def _check_declared_length(declared: str | None, limit: int) -> None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the request body is larger than {limit} bytes", code="request_too_large")


def _same_origin(origin: str, host: str | None) -> bool:
    """The page was served by this server itself (the origin's host:port is the request's Host)."""
    parts = urlsplit(origin)
    return host is not None and parts.scheme in ("http", "https") and parts.netloc == host.lower()


def _bare_host(host: str) -> str:
    """`Host` without its port and brackets, lowercased: `[::1]:8000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
