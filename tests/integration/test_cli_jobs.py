"""`voxserve job ...` as a user runs it: against the live test server (the bundled voice), and `--in-process`
with no server at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from tests.conftest import ServerProcess, decode, free_port

VOXSERVE = str(Path(sys.executable).with_name("voxserve"))
RUN_TIMEOUT_S = 120
TEXT = "Hello there, this is a test.\n\nThe end of it.\n"
BOOK = "# One\n\nHello there.\n\n# Two\n\nThe end.\n"
# Far more than the test lets it render: the job is still running when the client is interrupted.
LONG_TEXT = "\n\n".join(f"Paragraph {number}: the quick brown fox jumps over the lazy dog." for number in range(400))
pytestmark = pytest.mark.timeout(180)


def job(*args: str, url: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [VOXSERVE, "job", *args, *(["--url", url] if url else [])]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env={**os.environ, **(env or {})}, check=False
    )


def said(result: subprocess.CompletedProcess[str]) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


@pytest.fixture(scope="module")
def finished(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A two-paragraph job submitted with --wait: its id and the WAV it wrote."""
    directory = tmp_path_factory.mktemp("cli-jobs")
    (directory / "two.txt").write_text(TEXT)
    output = directory / "two.wav"
    result = job("submit", str(directory / "two.txt"), "-f", "wav", "--wait", "-o", str(output), url=server.url)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), output


def test_submit_wait_writes_a_wav_that_decodes(finished: tuple[str, Path]) -> None:
    job_id, output = finished
    assert job_id.startswith("job_")
    samples, rate = decode(output.read_bytes())
    assert rate == 22050
    assert len(samples) / rate > 1.0


def test_ls_shows_the_job(server: ServerProcess, finished: tuple[str, Path]) -> None:
    result = job("ls", url=server.url)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if finished[0] in line)
    assert "completed" in row
    assert "100%" in row


def test_status_json_is_the_job_object(server: ServerProcess, finished: tuple[str, Path]) -> None:
    result = job("status", finished[0], "--json", url=server.url)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["kind"], shown["status"], shown["error"]) == (finished[0], "speech", "completed", None)
    assert shown["progress"]["segments_done"] == shown["progress"]["segments_total"] == 2


def test_cancel_of_a_finished_job_exits_1_with_the_servers_message(
    server: ServerProcess, finished: tuple[str, Path]
) -> None:
    result = job("cancel", finished[0], url=server.url)
    assert result.returncode == 1
    assert f"error: job {finished[0]} is already completed" in said(result)


def test_ctrl_c_leaves_the_job_running_until_cancelled(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "long.txt").write_text(LONG_TEXT)
    command = [VOXSERVE, "job", "submit", str(tmp_path / "long.txt"), "--wait", "--url", server.url]
    waiting = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert waiting.stdout is not None
    job_id = waiting.stdout.readline().strip()
    time.sleep(1)  # into the event stream
    waiting.send_signal(signal.SIGINT)
    _, stderr = waiting.communicate(timeout=RUN_TIMEOUT_S)
    assert waiting.returncode == 130, stderr
    assert f"job {job_id} keeps running; `voxserve job cancel {job_id}` stops it" in " ".join(stderr.split())
    cancelled = job("cancel", job_id, url=server.url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} is cancelled" in said(cancelled)
    assert job("rm", job_id, url=server.url).returncode == 0
    gone = job("status", job_id, url=server.url)
    assert gone.returncode == 1
    assert f"error: no job {job_id}" in said(gone)


def test_a_refused_submit_exits_1_with_the_servers_message(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "two.txt").write_text(TEXT)
    result = job("submit", str(tmp_path / "two.txt"), "--format", "ogg", url=server.url)
    assert result.returncode == 1
    assert "error: response_format: Input should be 'mp3'" in said(result)
    assert result.stdout == ""


def test_an_unreachable_server_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = job("ls", url=url)
    assert result.returncode == 1
    assert f"error: cannot connect to voxserve at {url}" in said(result)


def test_in_process_renders_a_markdown_book_to_m4b_with_chapters(tmp_path: Path) -> None:
    (tmp_path / "book.md").write_text(BOOK)
    output = tmp_path / "book.m4b"
    env = {"VOXSERVE_DATA_DIR": str(tmp_path / "data"), "VOXSERVE_ESPEAK_VOICES": "false"}
    result = job("submit", str(tmp_path / "book.md"), "--in-process", "-f", "m4b", "-o", str(output), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("job_")
    with av.open(str(output)) as container:
        titles = [chapter["metadata"]["title"] for chapter in container.chapters()]
        assert container.streams.audio[0].codec_context.name == "aac"
    assert titles == ["One", "Two"]
