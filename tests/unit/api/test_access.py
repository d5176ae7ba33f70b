"""`/metrics` access by client address and `metrics_auth`, in-process (httpx's ASGI transport sets the client
address, which a real loopback server cannot vary)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from voxserve.api import metrics
from voxserve.api.errors import install_error_handlers
from voxserve.api.state import AppState
from voxserve.obs.telemetry import Telemetry, TelemetryOptions
from voxserve.service.access import AccessControl
from voxserve.storage.keys import KeyStore


def status(app: FastAPI, client: str, key: str | None = None) -> int:
    async def get() -> int:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return (await http.get("/metrics", headers=headers)).status_code

    return asyncio.run(get())


def metrics_app(tmp_path: Path, mode: str, *, with_keys: bool) -> tuple[FastAPI, dict[str, str]]:
    store = KeyStore(tmp_path)
    keys = {}
    if with_keys:
        keys = {scope: store.create(scope, (scope,))[1] for scope in ("admin", "speech")}
    state = AppState()
    # Only what /metrics reaches for: the access rules and the telemetry it renders.
    state.services = SimpleNamespace(  # type: ignore[assignment]
        access=AccessControl(store), telemetry=Telemetry(TelemetryOptions(enabled=False))
    )
    app = FastAPI()
    app.state.voxserve = state
    app.include_router(metrics.router_for(mode))  # type: ignore[arg-type]
    install_error_handlers(app)
    return app, keys


def test_remote_mode_opens_metrics_to_loopback_and_asks_others_for_an_admin_key(tmp_path: Path) -> None:
    app, keys = metrics_app(tmp_path, "remote", with_keys=True)
    assert status(app, "127.0.0.1") == 200
    assert status(app, "::1") == 200
    assert status(app, "203.0.113.5") == 401
    assert status(app, "203.0.113.5", keys["speech"]) == 403
    assert status(app, "203.0.113.5", keys["admin"]) == 200


@pytest.mark.parametrize(("mode", "loopback", "remote"), [("always", 401, 401), ("never", 200, 200)])
def test_always_and_never(tmp_path: Path, mode: str, loopback: int, remote: int) -> None:
    app, _ = metrics_app(tmp_path, mode, with_keys=True)
    assert status(app, "127.0.0.1") == loopback
    assert status(app, "203.0.113.5") == remote


def test_a_server_without_keys_serves_metrics_to_anyone_it_lets_in(tmp_path: Path) -> None:
    app, _ = metrics_app(tmp_path, "always", with_keys=False)
    assert status(app, "203.0.113.5") == 200
