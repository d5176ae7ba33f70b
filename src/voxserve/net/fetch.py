"""`UrlFetcher`: download a client-named URL with a byte cap and a time limit, refusing internal addresses.

Every hop (redirects included) resolves its host once, refuses it unless every address is globally routable
(loopback, private, link-local, cloud metadata, shared and reserved ranges all fail `is_global`, as do IPv6
addresses that carry such an IPv4 address), then connects to the checked address itself, so DNS cannot answer
differently between the check and the connection. TLS still verifies the certificate for the URL's hostname
(sent as SNI). A URL the client sent that cannot be fetched is `invalid_url`; anything the far end does wrong,
a bad redirect included, is `url_fetch_failed`."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

import httpx

from voxserve.errors import InvalidRequestError, PayloadTooLargeError

MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443}

# A host and port to the addresses to try, in order; an OSError means the name does not resolve.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_DNS_LABEL = re.compile(r"[a-z0-9_-]{1,63}", re.IGNORECASE)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Local-use NAT64 (RFC 8215): where it leads, and where in it the IPv4 address sits, is the operator's choice.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


@dataclass(frozen=True, slots=True)
class FetchOptions:
    max_bytes: int
    timeout_s: float
    allow_private: bool = False


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


class UrlFetcher:
    def __init__(
        self,
        options: FetchOptions,
        *,
        resolver: Resolver = resolve_host,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`resolver` names each host's addresses and `transport` carries the requests to the checked address
        (httpx's own by default); tests replace them to stand in for DNS and the network."""
        self.options = options
        self._resolve = resolver
        # No httpx timeouts: `fetch` holds the one deadline for the whole download, redirects included.
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=None, transport=transport)

    async def fetch(self, url: str, param: str) -> bytes:
        """The body at `url`; a client error (400, or 413 past the byte cap) names `param` when it fails."""
        try:
            async with asyncio.timeout(self.options.timeout_s):
                return await self._follow(url, param)
        except TimeoutError as exc:
            raise InvalidRequestError(
                f"{param}: no complete answer within {self.options.timeout_s:g} s", param=param, code="url_timeout"
            ) from exc

    async def _follow(self, url: str, param: str) -> bytes:
        target = _parse_url(url, param, "invalid_url")
        for _ in range(MAX_REDIRECTS + 1):
            async with aclosing(await self._send(target, param)) as response:
                if response.is_redirect and "location" in response.headers:
                    target = _redirect_target(target, response.headers["location"], param)
                    continue
                if response.status_code != 200:
                    raise _fetch_failed(param, f"fetching {target} answered HTTP {response.status_code}")
                return await self._read_capped(response, param)
        raise _fetch_failed(param, f"more than {MAX_REDIRECTS} redirects from {url}")

    async def _send(self, target: httpx.URL, param: str) -> httpx.Response:
        host = target.raw_host.decode("ascii")
        address = await self._checked_address(host, target.port or DEFAULT_PORTS[target.scheme], param)
        pinned = httpx.URL(scheme=target.scheme, host=address, port=target.port, raw_path=target.raw_path)
        # Identity only, read raw: a compressed body would be expanded before the byte cap could see it.
        headers = {"Host": target.netloc.decode("ascii"), "Accept-Encoding": "identity"}
        extensions = {"sni_hostname": host} if target.scheme == "https" else {}
        try:
            request = self._client.build_request("GET", pinned, headers=headers, extensions=extensions)
            return await self._client.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _fetch_failed(param, f"could not fetch {target}: {_describe(exc)}") from exc

    async def _checked_address(self, host: str, port: int, param: str) -> str:
        addresses = await self._addresses(host, port, param)
        if not self.options.allow_private:
            refused = [address for address in addresses if not _is_public(address)]
            if refused:
                raise InvalidRequestError(
                    f"{param}: host {host!r} resolves to a non-public address ({refused[0]}); "
                    "internal addresses are refused unless allow_private_urls is set",
                    param=param,
                    code="url_not_allowed",
                )
        return addresses[0]

    async def _addresses(self, host: str, port: int, param: str) -> list[str]:
        if _is_ip_literal(host):
            return [host]
        try:
            addresses = await self._resolve(host, port)
        except OSError as exc:
            raise _fetch_failed(param, f"cannot resolve host {host!r}") from exc
        if not addresses:
            raise _fetch_failed(param, f"host {host!r} has no addresses")
        return addresses

    async def _read_capped(self, response: httpx.Response, param: str) -> bytes:
        limit = self.options.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"{param}: the file is {int(declared)} bytes; the limit is {limit}", param=param)
        body = bytearray()
        try:
            async for piece in response.aiter_raw():
                body += piece
                if len(body) > limit:
                    message = f"{param}: the file is larger than the limit of {limit} bytes"
                    raise PayloadTooLargeError(message, param=param)
        except httpx.HTTPError as exc:
            raise _fetch_failed(param, f"the download broke off after {len(body)} bytes: {_describe(exc)}") from exc
        return bytes(body)

    async def aclose(self) -> None:
        await self._client.aclose()


def _parse_url(url: str, param: str, code: str) -> httpx.URL:
    """`url` as httpx will send it, refused with `code` unless it is http(s) with a usable host and port."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:  # bad IDNA labels raise UnicodeError, a ValueError
        raise InvalidRequestError(f"{param}: {url!r} is not a valid URL ({exc})", param=param, code=code) from exc
    if parsed.scheme not in DEFAULT_PORTS:
        raise InvalidRequestError(f"{param}: only http and https URLs are fetched", param=param, code=code)
    port_ok = parsed.port is None or 0 < parsed.port <= 65535
    if not port_ok or not _is_valid_host(parsed.raw_host.decode("ascii", "replace")):
        raise InvalidRequestError(f"{param}: {url!r} has no valid host and port", param=param, code=code)
    return parsed


def _redirect_target(base: httpx.URL, location: str, param: str) -> httpx.URL:
    try:
        joined = str(base.join(location))
    except (httpx.InvalidURL, ValueError) as exc:
        raise _fetch_failed(param, f"{base} redirected to an unusable URL {location!r}") from exc
    return _parse_url(joined, param, "url_fetch_failed")


def _is_valid_host(host: str) -> bool:
    """An IPv6 literal, or a DNS name (IPv4 literals included) of at most 253 characters in labels of 1 to 63."""
    if ":" in host:
        return _is_ip_literal(host)
    name = host.removesuffix(".")
    return 0 < len(name) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in name.split("."))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global
    if ip in _LOCAL_NAT64:
        return False
    embedded = _embedded_ipv4(ip)
    return ip.is_global if embedded is None else all(inner.is_global for inner in embedded)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses an IPv6 address carries, as its traffic ends up there: IPv4-mapped, 6to4, Teredo
    (server and client, the client un-XORed by `ipaddress`), NAT64 and IPv4-compatible forms."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return (ipaddress.IPv4Address(ip.packed[-4:]),)
    return None


def _describe(exc: Exception) -> str:
    """Some httpx errors (a connection reset, for one) have no message; their type says what happened."""
    return str(exc) or type(exc).__name__


def _fetch_failed(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", param=param, code="url_fetch_failed")
