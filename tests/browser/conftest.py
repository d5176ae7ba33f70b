"""The playground in a real browser: Playwright driving Debian's Chromium (`apt-get install chromium`; Playwright's
own browser download is not used). Without Chromium every test here is skipped, and `-ra` says why."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, sync_playwright

from tests.conftest import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, no sandbox (CI runs as root), and none of Chromium's own calls home: this machine's network is
# closed, and a page that reaches outside 127.0.0.1 must show up as a request, not as background noise.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
MICROPHONE_TEXT = (
    "Welcome back! You have three new messages and one missed call. "
    "The library closes early today, so return your books before five o'clock."
)

pytestmark = pytest.mark.browser


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if CHROMIUM is None:
        reason = "no Chromium on this machine: install Debian's package (`apt-get install chromium`) to run it"
        for item in items:
            if "tests/browser/" in str(item.path):
                item.add_marker(pytest.mark.skip(reason=reason))


# Module scope: Playwright's sync API keeps an event loop running on this thread while it is open, and every later
# test that calls `asyncio.run` would fail beside it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def speech_wav(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight seconds of the bundled voice as 16-bit WAV: a recording to upload, and what the fake microphone
    hears."""
    body = {"model": "tts-1", "input": MICROPHONE_TEXT, "voice": "en_US-joe-medium", "response_format": "wav"}
    response = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)
    assert response.status_code == 200, response.text
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    path.write_bytes(response.content)
    return path


@pytest.fixture(scope="module")
def browser(playwright: Playwright, speech_wav: Path) -> Iterator[Browser]:
    microphone = f"--use-file-for-fake-audio-capture={speech_wav}"
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, microphone])
    yield browser
    browser.close()


class PageWatch:
    """What a page did: console errors and uncaught exceptions, and every URL it requested."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("request", self._request)
        page.on("websocket", lambda socket: self.requests.append(socket.url))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["microphone"])
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.watch = PageWatch(page)  # type: ignore[attr-defined]
    yield page
    context.close()


def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot kept as a test artifact under build/screenshots/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
