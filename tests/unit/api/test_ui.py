"""The playground's page and assets in-process: served without a key and with a strict content policy, only the
shipped files by exact name, off with `ui_enabled = false`; and `/diagnostics/live`, the series it polls."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from tests.fakes import FAKE_SERVER, FakeEngine
from tests.unit.api.inprocess import running_app
from voxserve.settings import Settings

KEY = "sk-ui-test-key"


def fetch(tmp_path: Path, requests: list[tuple[str, str]], **overrides: object) -> list[httpx.Response]:
    settings = Settings(**{**FAKE_SERVER, "data_dir": tmp_path, **overrides})  # type: ignore[arg-type]

    async def run() -> list[httpx.Response]:
        async with running_app(settings, [FakeEngine()]) as (app, _):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                return [await client.request(method, path) for method, path in requests]

    return asyncio.run(run())


def test_the_page_and_its_assets_need_no_key_but_the_api_still_does(tmp_path: Path) -> None:
    page, script, style, voices = fetch(
        tmp_path, [("GET", "/"), ("GET", "/ui/app.js"), ("GET", "/ui/style.css"), ("GET", "/v1/audio/voices")],
        api_keys=[KEY],
    )  # fmt: skip
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    policy = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in policy
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["x-content-type-options"] == "nosniff"
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    assert voices.status_code == 401


@pytest.mark.parametrize(
    "path", ["/ui/index.html", "/ui/..%2Fapi%2Fui.py", "/ui/../settings.py", "/ui/%2e%2e%2fsettings.py", "/ui/nope.js"]
)
def test_only_the_shipped_assets_are_served(tmp_path: Path, path: str) -> None:
    (response,) = fetch(tmp_path, [("GET", path)])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_every_asset_the_page_names_is_served(tmp_path: Path) -> None:
    assets = sorted(_referenced_assets())
    responses = fetch(tmp_path, [("GET", f"/ui/{name}") for name in assets])
    assert "app.js" in assets
    assert [response.status_code for response in responses] == [200] * len(assets), assets


def _referenced_assets() -> set[str]:
    """Every `/ui/...` file named by the page and its scripts, and every module a script imports."""
    ui = Path(__file__).resolve().parents[3] / "src" / "voxserve" / "ui"
    names = set(re.findall(r"/ui/([\w.-]+)", (ui / "index.html").read_text()))
    for script in ui.glob("*.js"):
        names |= set(re.findall(r"from \"\./([\w.-]+)\"", script.read_text()))
    return names


def test_the_playground_can_be_turned_off(tmp_path: Path) -> None:
    page, script = fetch(tmp_path, [("GET", "/"), ("GET", "/ui/app.js")], ui_enabled=False)
    assert [page.status_code, script.status_code] == [404, 404]


def test_the_live_series_covers_the_last_minutes_in_buckets(tmp_path: Path) -> None:
    live, refused = fetch(tmp_path, [("GET", "/diagnostics/live?bucket_s=2"), ("GET", "/diagnostics/live?bucket_s=0")])
    body = live.json()
    assert body["bucket_s"] == 2.0
    assert [point["start_s"] for point in body["timeline"][-2:]] == [-4.0, -2.0]
    assert len(body["timeline"]) == 60
    assert set(body) >= {"queue", "cpu", "gpus", "window", "findings"}
    assert body["queue"]["depth_segments"] == 0
    assert json.dumps(body)  # JSON all the way down
    assert refused.status_code == 400


def _luminance(color: str) -> float:
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize(
    ("text", "ground"),
    [("ink", "paper"), ("muted", "paper"), ("muted", "ground"), ("accent-ink", "accent"), ("error", "error-ground"),
     ("ink", "highlight"), ("ink", "ground")],
)  # fmt: skip
def test_text_colours_meet_wcag_aa_contrast(text: str, ground: str) -> None:
    css = (Path(__file__).resolve().parents[3] / "src" / "voxserve" / "ui" / "style.css").read_text()
    palette = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", css))
    assert _contrast(palette[text], palette[ground]) >= 4.5
