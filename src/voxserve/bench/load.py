"""The load generator: closed-loop concurrency against any speech endpoint, one record per request."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from voxserve.audio.decode import audio_by_bytes, decode_audio
from voxserve.bench.playback import playback_stalls
from voxserve.bench.records import RequestRecord
from voxserve.errors import ConfigError, VoxError


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go and what they carry. With a `template`, the body is that JSON with `{text}` replaced,
    for servers with other APIs (e.g. `{"text": "{text}"}` for piper's HTTP server)."""

    url: str
    model: str = "tts-1"
    voice: str = "alloy"
    response_format: str = "mp3"
    stream: bool = True
    template: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, text: str) -> object:
        if self.template is not None:
            return json.loads(self.template.replace("{text}", json.dumps(text)[1:-1]))
        body: dict[str, object] = {
            "model": self.model, "input": text, "voice": self.voice, "response_format": self.response_format,
        }  # fmt: skip
        if not self.stream:
            body["stream"] = False
        return body


def check_loopback(url: str, allow_remote: bool) -> None:
    """Refuse to load anything but this machine unless `allow_remote` says so."""
    host = urlsplit(url).hostname
    if host is None:
        raise ConfigError(f"not a URL: {url}")
    if allow_remote:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        raise ConfigError(f"cannot resolve {host}: {exc}") from exc
    if not all(ipaddress.ip_address(address).is_loopback for address in addresses):
        raise ConfigError(f"{host} is not a loopback address; pass --allow-remote to load it")


@dataclass(slots=True)
class _Response:
    record: RequestRecord
    body: bytes = b""
    content_type: str = ""
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # seconds from the start, bytes so far


async def _one_request(client: httpx.AsyncClient, target: Target, text: str, level_start: float) -> _Response:
    started = time.perf_counter()
    result = _Response(RequestRecord(text_chars=len(text), started_at_s=started - level_start))
    record, arrivals, pieces = result.record, result.arrivals, []
    received = 0
    try:
        async with client.stream("POST", target.url, json=target.body(text), headers=target.headers) as response:
            record.status = response.status_code
            result.content_type = response.headers.get("content-type", "")
            async for piece in response.aiter_raw():
                if piece:
                    received += len(piece)
                    arrivals.append((time.perf_counter() - started, received))
                    pieces.append(piece)
    except httpx.HTTPError as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    record.latency_s = time.perf_counter() - started
    result.body = b"".join(pieces)
    record.body_bytes = len(result.body)
    if arrivals:
        record.ttfa_s = arrivals[0][0]
        record.max_gap_s = max((later - earlier for (earlier, _), (later, _) in itertools.pairwise(arrivals)),
                               default=0.0)  # fmt: skip
    if record.error is None and record.status != 200:
        record.error = f"HTTP {record.status}: {result.body[:200].decode(errors='replace')}"
    return result


def _measure_audio(responses: Sequence[_Response]) -> None:
    """Decode after the level, so the client's decoding does not compete with the server while it is measured:
    each response's audio, and what a real-time player would have heard of it (`playback_stalls`)."""
    for response in responses:
        record = response.record
        if record.error is None:
            try:
                record.audio_s = decode_audio(response.body, response.content_type).duration_s
                audio_at = audio_by_bytes(response.body, response.content_type)
            except VoxError as exc:
                record.error = f"undecodable response: {exc.message}"
                continue
            record.stalls, record.stall_s = playback_stalls(response.arrivals, audio_at)


async def run_level(
    target: Target, texts: Sequence[str], concurrency: int, *, max_requests: int, max_duration_s: float,
    on_request: Callable[[RequestRecord], None] = lambda _: None,
) -> tuple[list[RequestRecord], float]:  # fmt: skip
    """`concurrency` clients send requests back to back, cycling through `texts`, until `max_requests` have been
    sent or `max_duration_s` has passed. Returns the records and the level's wall time."""
    responses: list[_Response] = []
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits) as client:
        start = time.perf_counter()

        async def client_loop() -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() - start < max_duration_s:
                text = texts[issued % len(texts)]
                issued += 1
                response = await _one_request(client, target, text, start)
                responses.append(response)
                on_request(response.record)

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        wall_s = time.perf_counter() - start
    _measure_audio(responses)
    return [response.record for response in responses], wall_s
