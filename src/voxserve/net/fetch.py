"""`UrlFetcher`: download a client-named URL with a byte cap and a time limit, refusing internal addresses.

Every hop (redirects included) resolves its host once, refuses it unless every address is globally routable
(loopback, private, link-local, cloud metadata, shared and reserved ranges all fail `is_global`), then
connects to the checked address itself, so DNS cannot answer differently between the check and the
connection. TLS still verifies the certificate for the URL's hostname (sent as SNI)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from contextlib import aclosing
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from voxserve.errors import InvalidRequestError, PayloadTooLargeError

MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class FetchOptions:
    max_bytes: int
    timeout_s: float
    allow_private: bool = False


class UrlFetcher:
    def __init__(self, options: FetchOptions) -> None:
        self.options = options
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=options.timeout_s)

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
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
                message = f"{param}: only http and https URLs are fetched"
                raise InvalidRequestError(message, param=param, code="invalid_url")
            address = await self._checked_address(parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme], param)
            pinned = parts._replace(netloc=_netloc(address, parts.port)).geturl()
            headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
            extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
            request = self._client.build_request("GET", pinned, headers=headers, extensions=extensions)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _fetch_failed(param, f"could not fetch {url}: {exc}") from exc
            async with aclosing(response):
                if response.is_redirect and "location" in response.headers:
                    url = str(httpx.URL(url).join(response.headers["location"]))
                    continue
                if response.status_code != 200:
                    raise _fetch_failed(param, f"fetching {url} answered HTTP {response.status_code}")
                return await self._read_capped(response, param)
        raise _fetch_failed(param, f"more than {MAX_REDIRECTS} redirects from {url}")

    async def _checked_address(self, host: str, port: int, param: str) -> str:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise _fetch_failed(param, f"cannot resolve host {host!r}") from exc
        addresses = [info[4][0] for info in infos]
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

    async def _read_capped(self, response: httpx.Response, param: str) -> bytes:
        limit = self.options.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"{param}: the file is {int(declared)} bytes; the limit is {limit}", param=param)
        body = bytearray()
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) > limit:
                raise PayloadTooLargeError(f"{param}: the file is larger than the limit of {limit} bytes", param=param)
        return bytes(body)

    async def aclose(self) -> None:
        await self._client.aclose()


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global


def _netloc(address: str, port: int | None) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" if port else host


def _fetch_failed(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", param=param, code="url_fetch_failed")
