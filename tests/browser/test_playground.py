"""The playground at `/` in Chromium against the real server (bundled voice): it loads clean and offline, speaks
and plays, draws the request's timing, registers and deletes voices, converts, runs jobs, speaks live text, shows
the server's own errors, follows load on the dashboard, asks for a key when the server wants one, and every
control is reachable from the keyboard."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import screenshot
from tests.conftest import ServerProcess, serve

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

VIEWS = ("speak", "live", "voices", "jobs", "dashboard")


def open_page(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/")
    expect(page.locator("#speak-voice option")).not_to_have_count(0)


def show(page: Page, view: str) -> None:
    page.click(f"#tab-{view}")
    expect(page.locator(f"#view-{view}")).to_be_visible()


def test_the_page_loads_clean_and_never_leaves_loopback(page: Page, server: ServerProcess) -> None:
    response = page.goto(f"{server.url}/")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("#speak-voice option")).not_to_have_count(0)
    for view in VIEWS:
        show(page, view)
    expect(page.locator("#dash-requests")).not_to_have_text("–")
    assert page.watch.errors == []  # type: ignore[attr-defined]
    requested = page.watch.requests  # type: ignore[attr-defined]
    assert any(url.endswith("/ui/app.js") for url in requested)
    hosts = {urlsplit(url.removeprefix("blob:")).hostname for url in requested}
    assert hosts == {"127.0.0.1"}, requested


def test_the_voice_picker_groups_voices_by_engine_and_language(page: Page, server: ServerProcess) -> None:
    open_page(page, server)
    groups = page.locator("#speak-voice optgroup").evaluate_all("groups => groups.map(group => group.label)")
    assert groups[0] == "Piper · en"
    assert "eSpeak NG · en" in groups
    english = page.locator('#speak-voice optgroup[label="eSpeak NG · en"] option')
    assert "espeak:en-us" in english.evaluate_all("options => options.map(option => option.value)")


@pytest.mark.parametrize("response_format", ["pcm", "mp3"])
def test_speaking_plays_the_whole_audio_and_draws_the_requests_timing(
    page: Page, server: ServerProcess, response_format: str
) -> None:
    open_page(page, server)
    text = "The train leaves at seven. Please be on the platform five minutes early."
    page.fill("#speak-text", text)
    page.select_option("#speak-voice", "en_US-joe-medium")
    page.select_option("#speak-format", response_format)
    page.click("#speak-button")
    status = page.locator("#speak-status")
    expect(status).to_have_attribute("data-audio-seconds", re.compile(r"\d"))
    audio_s = float(status.get_attribute("data-audio-seconds") or 0)
    decoded_s = float(status.get_attribute("data-decoded-seconds") or 0)
    assert audio_s > 3.0
    assert decoded_s == pytest.approx(audio_s, abs=0.06 if response_format == "pcm" else 0.12)
    assert status.get_attribute("data-playback") == "running"
    stages = set(page.locator("#speak-waterfall li").evaluate_all("rows => rows.map(row => row.dataset.stage)"))
    assert {"receive", "phonemize", "queue", "model", "encode", "ttfa", "total"} <= stages
    spoken = page.locator("#speak-words span").all_inner_texts()
    assert spoken == re.findall(r"[A-Za-z]+", text)
    expect(page.locator("#speak-download")).to_be_visible()
    assert page.watch.errors == []  # type: ignore[attr-defined]
    if response_format == "pcm":
        screenshot(page, "speak")


def test_an_invalid_request_shows_the_servers_own_error(page: Page, server: ServerProcess) -> None:
    body = {"model": "tts-1", "input": "Too fast.", "voice": "en_US-joe-medium", "response_format": "pcm",
            "speed": 9, "stream_format": "sse", "timestamps": "word"}  # fmt: skip
    expected = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=30).json()["error"]["message"]
    open_page(page, server)
    page.fill("#speak-text", "Too fast.")
    page.fill("#speak-speed", "9")
    page.click("#speak-button")
    expect(page.locator("#speak-error")).to_have_text(expected)
    expect(page.locator("#speak-status")).to_have_text("")


def test_a_voice_registered_from_a_file_is_picked_converted_to_and_deleted(
    page: Page, server: ServerProcess, speech_wav: Path
) -> None:
    open_page(page, server)
    show(page, "voices")
    page.fill("#voice-name", "Browser Voice")
    page.set_input_files("#voice-file", str(speech_wav))
    page.click("#voice-register")
    expect(page.locator("#voice-status")).to_contain_text("Registered")
    custom = page.locator('#speak-voice optgroup[label="Custom voices"] option', has_text="Browser Voice")
    expect(custom).to_have_count(1)
    voice_id = custom.get_attribute("value")
    expect(page.locator(f'#voice-table tr[data-voice="{voice_id}"] td').nth(3)).to_have_text(re.compile(r"\d+ Hz"))

    page.set_input_files("#convert-file", str(speech_wav))
    page.select_option("#convert-voice", voice_id)
    page.click("#convert-button")
    expect(page.locator("#convert-status")).to_have_text("Converted: play both to compare.")
    result_s = page.locator("#convert-result").evaluate(
        "audio => new Promise(done => audio.readyState >= 1 ? done(audio.duration)"
        " : audio.addEventListener('loadedmetadata', () => done(audio.duration)))"
    )
    assert result_s > 3.0
    screenshot(page, "voices")

    page.get_by_role("button", name="Delete voice Browser Voice").click()
    expect(page.locator("#voice-status")).to_have_text('Deleted "Browser Voice".')
    expect(custom).to_have_count(0)
    assert httpx.get(f"{server.url}/v1/audio/voices/{voice_id}", timeout=10).status_code == 404
    assert page.watch.errors == []  # type: ignore[attr-defined]


def test_a_voice_is_registered_from_the_microphone(page: Page, server: ServerProcess) -> None:
    """Chromium's fake microphone plays the bundled voice's speech (see `speech_wav`)."""
    open_page(page, server)
    show(page, "voices")
    page.click("#voice-record")
    expect(page.locator("#voice-record")).to_have_text("Stop recording")
    page.wait_for_timeout(7000)  # the server wants at least 5 s of speech; nothing here is timed
    page.click("#voice-record")
    expect(page.locator("#voice-recording")).to_be_visible()
    page.fill("#voice-name", "Microphone Voice")
    page.click("#voice-register")
    expect(page.locator("#voice-status")).not_to_have_text("Analysing the recording…")
    expect(page.locator("#voice-error")).to_be_hidden()
    expect(page.locator("#voice-status")).to_contain_text("Registered")
    row = page.locator("#voice-table tbody tr", has_text="Microphone Voice")
    seconds = float(row.locator("td").nth(2).inner_text().removesuffix(" s"))
    assert seconds >= 5.0
    row.get_by_role("button", name="Delete voice Microphone Voice").click()
    expect(row).to_have_count(0)
    assert page.watch.errors == []  # type: ignore[attr-defined]


def test_a_job_from_a_text_file_shows_progress_and_downloads(page: Page, server: ServerProcess, tmp_path: Path) -> None:
    book = tmp_path / "story.md"
    book.write_text("# One\n\nIt was a bright cold day. The clocks were striking.\n\n# Two\n\nNothing moved.\n")
    open_page(page, server)
    show(page, "jobs")
    page.set_input_files("#job-file", str(book))
    page.select_option("#job-format", "mp3")
    page.click("#job-submit")
    row = page.locator("#job-table tbody tr").first
    expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    progress = row.locator("progress")
    assert progress.get_attribute("value") == progress.get_attribute("max")
    screenshot(page, "jobs")
    with page.expect_download() as download:
        row.get_by_role("button", name=re.compile("^Download")).click()
    saved = tmp_path / "book.mp3"
    download.value.save_as(saved)
    assert saved.stat().st_size > 4000
    job_id = row.get_attribute("data-job")
    row.get_by_role("button", name=re.compile("^Delete")).click()
    expect(page.locator(f'#job-table tr[data-job="{job_id}"]')).to_have_count(0)
    assert page.watch.errors == []  # type: ignore[attr-defined]


def test_live_text_speaks_each_sentence_as_it_is_typed(page: Page, server: ServerProcess) -> None:
    open_page(page, server)
    show(page, "live")
    page.select_option("#live-voice", "en_US-joe-medium")
    page.click("#live-connect")
    expect(page.locator("#live-text")).to_be_enabled()
    page.locator("#live-text").press_sequentially("Good morning. The coffee is ready", delay=5)
    expect(page.locator("#live-segments li")).to_have_text(["Good morning."])
    page.click("#live-flush")
    expect(page.locator("#live-segments li")).to_have_text(["Good morning.", "The coffee is ready"])
    page.click("#live-end")
    expect(page.locator("#live-status")).to_have_text(re.compile(r"^Spoken: [0-9.]+ s of audio \(completed\)"))
    screenshot(page, "live")
    page.click("#live-close")
    expect(page.locator("#live-status")).to_have_text("Not connected.")
    assert page.watch.errors == []  # type: ignore[attr-defined]


@pytest.fixture
def background_load(server: ServerProcess) -> Iterator[threading.Event]:
    """Requests, one after another, until the test ends (each a real synthesis: the cache is bypassed)."""
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=60, headers={"Cache-Control": "no-store"}) as client:
            while not stop.is_set():
                client.post("/v1/audio/speech", json={"input": "Load for the dashboard.", "voice": "alloy"})

    worker = threading.Thread(target=load)
    worker.start()
    yield stop
    stop.set()
    worker.join(timeout=60)


def test_the_dashboard_follows_a_background_load(
    page: Page, server: ServerProcess, background_load: threading.Event
) -> None:
    open_page(page, server)
    show(page, "dashboard")
    requests = page.locator("#dash-requests")
    expect(requests).to_have_attribute("data-count", re.compile(r"\d+"))
    before = int(requests.get_attribute("data-count") or 0)
    # The page's CSP forbids eval, which `wait_for_function` needs: poll the attribute instead.
    for _ in range(30):
        if int(requests.get_attribute("data-count") or 0) >= before + 3:
            break
        page.wait_for_timeout(1000)
    assert int(requests.get_attribute("data-count") or 0) >= before + 3
    expect(page.locator("#chart-throughput")).to_have_attribute("aria-label", re.compile(r"^latest [0-9.]+"))
    expect(page.locator("#dash-findings li").first).not_to_have_text(re.compile("Nothing to report"))
    page.click("#bench-run")
    expect(page.locator("#bench-result dt").first).to_have_text("Requests", timeout=60_000)
    screenshot(page, "dashboard")
    assert page.watch.errors == []  # type: ignore[attr-defined]


FOCUSABLE = (
    "panel => [...panel.querySelectorAll('button, input, select, textarea, a[href]')]"
    ".filter(element => element.id && !element.disabled && element.offsetParent !== null)"
    ".map(element => element.id)"
)


@pytest.mark.parametrize("view", VIEWS)
def test_every_control_of_a_view_is_reachable_by_keyboard(page: Page, server: ServerProcess, view: str) -> None:
    open_page(page, server)
    page.focus("#tab-speak")
    for _ in range(VIEWS.index(view)):
        page.keyboard.press("ArrowRight")
    assert page.evaluate("() => document.activeElement.id") == f"tab-{view}"
    expect(page.locator(f"#view-{view}")).to_be_visible()
    controls = set(page.locator(f"#view-{view}").evaluate(FOCUSABLE))
    assert controls
    reached = set()
    for _ in range(len(controls) + 10):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("() => document.activeElement.id"))
    assert controls <= reached


def test_the_key_field_unlocks_a_server_that_requires_keys(page: Page, keyed_server: tuple[ServerProcess, str]) -> None:
    server, key = keyed_server
    page.goto(f"{server.url}/")
    expect(page.locator("#key-status")).to_have_text("This server requires an API key.")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    expect(page.locator("#key-status")).to_have_text("Key in use.")
    expect(page.locator("#speak-voice option")).not_to_have_count(0)
    assert page.evaluate("() => sessionStorage.getItem('voxserve.apiKey')") == key
    assert page.evaluate("() => localStorage.length") == 0
    page.click("#speak-button")
    expect(page.locator("#speak-status")).to_have_attribute("data-audio-seconds", re.compile(r"\d"))


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    key = "sk-browser-test-key"
    env = {
        "VOXSERVE_API_KEYS": json.dumps([key]),
        "VOXSERVE_ESPEAK_VOICES": "false",
        "VOXSERVE_DATA_DIR": str(tmp_path_factory.mktemp("keyed-browser-data")),
    }
    for server in serve(env, tmp_path_factory.mktemp("keyed-browser")):
        yield server, key
