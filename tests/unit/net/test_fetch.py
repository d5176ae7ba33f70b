"""The URL fetcher refuses non-public addresses (at every hop, however an IPv4 address is wrapped in IPv6),
malformed URLs and non-HTTP schemes before connecting anywhere, and turns whatever the far end does wrong into a
client error, never a 500.

A raw socket server on 127.0.0.1 sends exactly the bytes each test needs. To test redirects from a public host,
`FakeDns` answers a public address for a name and `RoutedTransport` delivers connections to that address to the
local server, as the internet would; the fetcher's own resolve, check and connect steps run unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import httpx
import pytest

from voxserve.errors import InvalidRequestError, PayloadTooLargeError
from voxserve.net.fetch import FetchOptions, UrlFetcher, _is_public

PUBLIC_IP = "93.184.215.14"


def teredo(server: str, client: str) -> str:
    """A Teredo address (2001::/32): server IPv4, flags, port, then the client IPv4 XORed with all ones."""
    server_bits, client_bits = int(ipaddress.IPv4Address(server)), int(ipaddress.IPv4Address(client))
    value = 0x2001_0000 << 96 | server_bits << 64 | 0x8000_63BF << 32 | client_bits ^ 0xFFFF_FFFF
    return str(ipaddress.IPv6Address(value))


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200", "0.0.0.0",
     "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not _is_public(address)


def test_global_addresses_are_public() -> None:
    assert _is_public("93.184.215.14")
    assert _is_public("2606:2800:21f:cb07:6820:80da:af6b:8b2c")


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:a00:1::", "::7f00:1",
     "::a00:1", "::ffff:10.0.0.1", teredo("65.54.227.120", "127.0.0.1"), teredo("65.54.227.120", "10.0.0.1"),
     teredo("10.0.0.1", "8.8.8.8"), "64:ff9b:1::808:808"],
    ids=["nat64-loopback", "nat64-private", "nat64-metadata", "6to4-loopback", "6to4-private",
         "compatible-loopback", "compatible-private", "mapped-private", "teredo-loopback", "teredo-private",
         "teredo-private-server", "local-nat64"],
)  # fmt: skip
def test_ipv6_wrapping_an_internal_ipv4_is_not_public(address: str) -> None:
    assert not _is_public(address)


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::808:808", "2002:808:808::1", "::808:808", "::ffff:8.8.8.8", teredo("65.54.227.120", "8.8.8.8")],
    ids=["nat64", "6to4", "compatible", "mapped", "teredo"],
)
def test_ipv6_wrapping_a_public_ipv4_is_public(address: str) -> None:
    assert _is_public(address)


def test_teredo_addresses_are_built_as_python_reads_them() -> None:
    address = ipaddress.IPv6Address(teredo("65.54.227.120", "127.0.0.1"))
    assert address.teredo == (ipaddress.IPv4Address("65.54.227.120"), ipaddress.IPv4Address("127.0.0.1"))


class FakeDns:
    """Answers each name with its next list of addresses (the last repeats), so a name can rebind between hops;
    unknown names do not resolve."""

    def __init__(self, answers: dict[str, list[list[str]]] | None = None) -> None:
        self._answers = answers or {}
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self._answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self._answers[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]


class RoutedTransport(httpx.AsyncBaseTransport):
    """The network, as far as these tests go: a connection to PUBLIC_IP reaches the server on 127.0.0.1."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == PUBLIC_IP:
            request.url = request.url.copy_with(host="127.0.0.1")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True)
class Reply:
    data: bytes
    ending: Literal["close", "reset", "hang"] = "close"  # FIN, RST, or nothing until the test ends


class RawServer:
    """Answers one connection at a time with the canned bytes for its request path; records the paths asked."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.paths: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            # A client that gives up early (past the byte cap, at its deadline) is part of these tests.
            with connection, contextlib.suppress(OSError):
                connection.settimeout(10)
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            if not (piece := connection.recv(4096)):
                return
            request += piece
        path = request.split(b" ", 2)[1].decode()
        self.paths.append(path)
        reply = self.replies.get(path, Reply(response(b"", status="404 Not Found")))
        connection.sendall(reply.data)
        if reply.ending == "hang":
            self._stop.wait(30)
        elif reply.ending == "reset":
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def response(body: bytes, *, status: str = "200 OK", headers: str = "", length: int | None = None) -> bytes:
    """An HTTP/1.1 response; `length` overrides the declared Content-Length, and -1 declares none (the body then
    ends when the connection closes)."""
    declared = "" if length == -1 else f"Content-Length: {len(body) if length is None else length}\r\n"
    return f"HTTP/1.1 {status}\r\n{headers}{declared}Connection: close\r\n\r\n".encode() + body


def redirect(location: str) -> Reply:
    return Reply(response(b"", status="302 Found", headers=f"Location: {location}\r\n"))


@pytest.fixture
def server() -> Iterator[RawServer]:
    raw = RawServer()
    yield raw
    raw.close()


def fetch(url: str, *, dns: FakeDns | None = None, allow_private: bool = False, timeout_s: float = 10.0) -> bytes:
    """`url` fetched into `source_url` with a 1 KiB cap, through `RoutedTransport`."""

    async def run() -> bytes:
        options = FetchOptions(max_bytes=1024, timeout_s=timeout_s, allow_private=allow_private)
        fetcher = UrlFetcher(options, resolver=dns or FakeDns(), transport=RoutedTransport())
        try:
            return await fetcher.fetch(url, "source_url")
        finally:
            await fetcher.aclose()

    return asyncio.run(run())


def refusal(
    url: str, *, dns: FakeDns | None = None, allow_private: bool = False, timeout_s: float = 10.0
) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as refused:
        fetch(url, dns=dns, allow_private=allow_private, timeout_s=timeout_s)
    assert refused.value.param == "source_url"
    return refused.value


@pytest.mark.parametrize(
    ("url", "code"),
    [("ftp://example.com/a.wav", "invalid_url"), ("file:///etc/passwd", "invalid_url"),
     ("http://[::1]:8080/a.wav", "url_not_allowed"), ("http://169.254.169.254/", "url_not_allowed"),
     ("http://[64:ff9b::7f00:1]/a.wav", "url_not_allowed"), ("http://[2002:a9fe:a9fe::]/", "url_not_allowed"),
     ("http://[::ffff:7f00:1]/", "url_not_allowed")],
)  # fmt: skip
def test_refused_urls_name_the_parameter(url: str, code: str) -> None:
    async def attempt() -> None:
        fetcher = UrlFetcher(FetchOptions(max_bytes=1024, timeout_s=5))
        try:
            await fetcher.fetch(url, "source_url")
        finally:
            await fetcher.aclose()

    with pytest.raises(InvalidRequestError) as refused:
        asyncio.run(attempt())
    assert (refused.value.code, refused.value.param) == (code, "source_url")


@pytest.mark.parametrize(
    "url",
    ["http://h:99999/", "http://h:abc/", "http://h:0/", "http://[::1/", "http://[not-ip]/", "http:///a.wav",
     f"http://{'a' * 64}.example/", f"http://{'a' * 60}.{'b' * 60}.{'c' * 60}.{'d' * 60}.{'e' * 60}.example/",
     "http://a..b/", "http://a b/", "http://exa\x00mple.com/", "http://ex%41mple.com/",
     "", "not a url", "//example.com/a.wav"],
    ids=["port-range", "port-letters", "port-zero", "open-bracket", "bad-ipv6", "no-host", "long-label",
         "long-hostname", "empty-label", "space", "nul", "percent", "empty", "words", "no-scheme"],
)  # fmt: skip
def test_malformed_urls_are_invalid_url_before_any_lookup(url: str) -> None:
    dns = FakeDns()
    assert refusal(url, dns=dns).code == "invalid_url"
    assert dns.lookups == []


def test_a_name_that_resolves_to_a_wrapped_internal_address_is_refused() -> None:
    dns = FakeDns({"sneaky.example": [[PUBLIC_IP, "64:ff9b::7f00:1"]]})
    assert refusal("http://sneaky.example/a.wav", dns=dns).code == "url_not_allowed"


def test_a_public_name_is_fetched_through_the_routed_network(server: RawServer) -> None:
    server.replies["/a.wav"] = Reply(response(b"RIFF-audio"))
    dns = FakeDns({"public.example": [[PUBLIC_IP]]})
    assert fetch(server.url("/a.wav", "public.example"), dns=dns) == b"RIFF-audio"


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.1:{port}/secret", "http://internal.example:{port}/secret", "http://[::1]:{port}/secret",
     "http://[64:ff9b::7f00:1]:{port}/secret"],
    ids=["loopback", "name-of-loopback", "ipv6-loopback", "nat64-loopback"],
)  # fmt: skip
def test_a_redirect_from_a_public_host_to_an_internal_one_is_refused(server: RawServer, target: str) -> None:
    server.replies["/start"] = redirect(target.format(port=server.port))
    server.replies["/secret"] = Reply(response(b"internal"))
    dns = FakeDns({"public.example": [[PUBLIC_IP]], "internal.example": [["127.0.0.1"]]})
    assert refusal(server.url("/start", "public.example"), dns=dns).code == "url_not_allowed"
    assert server.paths == ["/start"]


def test_a_name_that_rebinds_to_loopback_on_the_next_hop_is_refused(server: RawServer) -> None:
    server.replies["/start"] = redirect(server.url("/secret", "rebind.example"))
    server.replies["/secret"] = Reply(response(b"internal"))
    dns = FakeDns({"rebind.example": [[PUBLIC_IP], ["127.0.0.1"]]})
    assert refusal(server.url("/start", "rebind.example"), dns=dns).code == "url_not_allowed"
    assert (dns.lookups, server.paths) == (["rebind.example", "rebind.example"], ["/start"])


def test_a_body_past_the_byte_cap_is_413(server: RawServer) -> None:
    server.replies["/declared"] = Reply(response(b"x" * 2000))
    server.replies["/streamed"] = Reply(response(b"x" * 2000, length=-1))
    for path in ("/declared", "/streamed"):
        with pytest.raises(PayloadTooLargeError) as refused:
            fetch(server.url(path), allow_private=True)
        assert (refused.value.status_code, refused.value.code, refused.value.param) == (
            413,
            "file_too_large",
            "source_url",
        )


def test_a_body_that_stalls_is_url_timeout(server: RawServer) -> None:
    server.replies["/slow"] = Reply(response(b"x" * 10, length=100), ending="hang")
    assert refusal(server.url("/slow"), allow_private=True, timeout_s=0.5).code == "url_timeout"


@pytest.mark.parametrize(
    "reply",
    [redirect("http://[::1/"), redirect("http://h:99999/"), redirect("ftp://example.com/a.wav"),
     redirect(f"http://{'a' * 64}.example/"), Reply(response(b"x" * 10, length=100)),
     Reply(response(b"x" * 10, length=100), ending="reset"), Reply(b"garbage\r\n\r\n"),
     Reply(response(b"", status="500 Internal Server Error"))],
    ids=["location-open-bracket", "location-port", "location-ftp", "location-long-label", "dropped-mid-body",
         "reset-mid-body", "not-http", "http-500"],
)  # fmt: skip
def test_what_the_far_end_gets_wrong_is_url_fetch_failed(server: RawServer, reply: Reply) -> None:
    server.replies["/a.wav"] = reply
    assert refusal(server.url("/a.wav"), allow_private=True).code == "url_fetch_failed"


def test_a_redirect_loop_is_url_fetch_failed(server: RawServer) -> None:
    server.replies["/loop"] = redirect("/loop")
    assert refusal(server.url("/loop"), allow_private=True).code == "url_fetch_failed"
    assert len(server.paths) == 6


def test_a_compressed_body_is_capped_as_sent_never_expanded(server: RawServer) -> None:
    """A small gzip body that expands to far more than the cap: the fetcher asks for identity and reads raw bytes,
    so the bomb arrives as its few compressed bytes (and fails as audio later), never expanded in memory."""
    bomb = gzip.compress(b"\0" * 800_000)
    assert len(bomb) < 1024
    server.replies["/bomb"] = Reply(response(bomb, headers="Content-Encoding: gzip\r\n"))
    assert fetch(server.url("/bomb"), allow_private=True) == bomb
