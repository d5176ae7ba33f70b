"""The whole app in-process around fake engines, and an ASGI client that reads a response as it streams and can
hang up at a moment the test chooses (httpx's `ASGITransport` buffers whole responses and never disconnects)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Message

from voxserve.api.app import create_app
from voxserve.engines.base import Engine
from voxserve.service.bootstrap import Engines, Services, build_services
from voxserve.settings import Settings

READY_WAIT_S = 30.0  # a bound a loaded machine cannot reach; the wait ends as soon as the warm-up does


@asynccontextmanager
async def running_app(settings: Settings, engines: list[Engine]) -> AsyncIterator[tuple[FastAPI, Services]]:
    """The app built around `engines`, started (lifespan) and warmed up."""
    services = build_services(settings, Engines(engines, on_gpu=False))
    app = create_app(settings, services)
    async with app.router.lifespan_context(app):
        async with asyncio.timeout(READY_WAIT_S):
            while not app.state.voxserve.ready:
                await asyncio.sleep(0.01)
        yield app, services


class AsgiCall:
    """One POST with a JSON body, driven straight through the ASGI interface. `hang_up()` makes the client's
    next `receive` a disconnect, as a server sees a client that closed its connection. A `partial` call sends
    only the first half of its body and waits there (a client that stalls, or leaves, mid-upload)."""

    def __init__(self, app: FastAPI, path: str, body: dict[str, object], *, partial: bool = False) -> None:
        self.messages: list[Message] = []
        self.first_body = asyncio.Event()  # set when the first non-empty piece of the body was sent
        self._payload = json.dumps(body).encode()
        self._pieces = [self._payload[: len(self._payload) // 2]] if partial else [self._payload]
        self._hung_up = asyncio.Event()
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(self._payload)).encode())],
        }  # fmt: skip
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    def hang_up(self) -> None:
        self._hung_up.set()

    async def finished(self) -> None:
        await asyncio.wait_for(self.task, READY_WAIT_S)

    @property
    def status(self) -> int | None:
        starts = [message for message in self.messages if message["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def headers(self) -> dict[str, str]:
        starts = [message for message in self.messages if message["type"] == "http.response.start"]
        return {name.decode(): value.decode() for name, value in starts[0]["headers"]} if starts else {}

    @property
    def body(self) -> bytes:
        return b"".join(
            message.get("body", b"") for message in self.messages if message["type"] == "http.response.body"
        )

    async def _receive(self) -> Message:
        if self._pieces:
            piece = self._pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": piece != self._payload}
        await self._hung_up.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.first_body.set()


class AsgiSocket:
    """One WebSocket, driven straight through the ASGI interface: the test sends text frames and reads what the
    server sends, in order (`receive`), and can hang up (`disconnect`)."""

    def __init__(self, app: FastAPI, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._outgoing: asyncio.Queue[Message] = asyncio.Queue()
        self._incoming.put_nowait({"type": "websocket.connect"})
        scope = {
            "type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "scheme": "ws", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "subprotocols": [],
            "headers": headers if any(name == b"host" for name, _ in headers or []) else
                       [(b"host", b"127.0.0.1:8000"), *(headers or [])],
        }  # fmt: skip
        self.task = asyncio.create_task(app(scope, self._incoming.get, self._outgoing.put))

    def send(self, event: dict[str, object]) -> None:
        self._incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(event)})

    def disconnect(self) -> None:
        self._incoming.put_nowait({"type": "websocket.disconnect", "code": 1001})

    async def receive(self) -> Message:
        """The server's next message (`websocket.accept`, `websocket.send` or `websocket.close`)."""
        return await asyncio.wait_for(self._outgoing.get(), READY_WAIT_S)

    async def event(self) -> dict[str, object]:
        """The server's next JSON event; audio frames before it are skipped."""
        while True:
            message = await self.receive()
            if message["type"] == "websocket.send" and message.get("text") is not None:
                return json.loads(message["text"])
            assert message["type"] in ("websocket.send", "websocket.accept"), message

    async def until(self, kind: str) -> tuple[list[dict[str, object]], bytes]:
        """Every event up to and including the first of type `kind`, and the audio sent before it."""
        events: list[dict[str, object]] = []
        audio = b""
        while not events or events[-1]["type"] != kind:
            message = await self.receive()
            assert message["type"] != "websocket.close", events
            if message["type"] == "websocket.send":
                if message.get("bytes") is not None:
                    audio += message["bytes"]
                else:
                    events.append(json.loads(message["text"]))
        return events, audio
