"""Long-form jobs end to end, on the bundled Piper voice and a real `voxserve serve`: a book job killed (`kill -9`)
mid-render is left `running` on disk, resumes by itself at the next start without making its finished segments
again, and gives the same file, byte for byte, as an uninterrupted run; an M4B book has its chapter marks."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import srt
import webvtt

from tests.conftest import ServerProcess, decode, metric_value
from voxserve.audio.loudness import integrated_lufs

JOBS = "/v1/audio/jobs"
WAIT_S = 240
POLL_S = 0.05
PARAGRAPHS = (
    "The harbour was quiet before dawn, and the boats rocked gently on the dark water.",
    "A fisherman carried his nets down the stone steps, humming an old song to himself.",
    "Gulls circled overhead, waiting for the first catch of the day to come ashore.",
    "By sunrise the market stalls were open, and the smell of fresh bread filled the air.",
    "Far above the town, the road climbed through green hills dotted with sheep.",
    "A young traveller stopped at the top to look back at the sea one last time.",
    "The wind carried the sound of bells from the church in the valley below.",
    "She smiled, shouldered her bag, and walked on towards the mountains in the north.",
)
BOOK = "\n\n".join(["# The Harbour", *PARAGRAPHS[:4], "# The Hills", *PARAGRAPHS[4:]])
SHORT_BOOK = "# Morning\n\nThe sun came up over the hills.\n\n# Evening\n\nThe stars came out one by one."
CHAPTER_PAUSE_S = 2.0  # job_chapter_pause_ms: after every chapter but the last
# Noise off makes synthesis deterministic: a resumed job and an uninterrupted one make the same samples. Espeak
# voices and the warm-up only slow the start.
ENV = {
    "VOXSERVE_NOISE_SCALE": "0",
    "VOXSERVE_NOISE_W": "0",
    "VOXSERVE_ESPEAK_VOICES": "false",
    "VOXSERVE_WARMUP": "false",
}

pytestmark = pytest.mark.timeout(300)


@contextlib.contextmanager
def client_of(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def submit(client: httpx.Client, text: str, response_format: str) -> dict[str, object]:
    body = {"input": text, "input_format": "markdown", "voice": "alloy", "response_format": response_format}
    response = client.post(JOBS, json=body)
    assert response.status_code == 202, response.text
    return response.json()


def wait_for(client: httpx.Client, job_id: str, condition: Callable[[dict], bool]) -> dict:
    """The job as soon as `condition` holds (or it finished); polled, so SIGKILL can land right after."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        response = client.get(f"{JOBS}/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if condition(job) or job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(POLL_S)
    raise AssertionError(f"job {job_id} did not get there in {WAIT_S} s: {job}")


def finished(client: httpx.Client, job_id: str) -> dict:
    job = wait_for(client, job_id, lambda _: False)
    assert job["status"] == "completed", job
    return job


def download(client: httpx.Client, job_id: str) -> bytes:
    response = client.get(f"{JOBS}/{job_id}/audio")
    assert response.status_code == 200, response.text
    return response.content


def stored_job(data_dir: Path, job_id: str) -> tuple[str, int, int]:
    """The job's row as a crash left it: status, segments done, segments in all."""
    with contextlib.closing(sqlite3.connect(data_dir / "voxserve.sqlite3")) as db:
        row = db.execute("SELECT status, segments_done, segments_total FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row is not None, f"no row for {job_id}"
    return row


def test_a_killed_job_resumes_by_itself_into_the_same_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # Two one-thread workers whatever the machine: on many cores every segment would run at once and the job
    # could finish between two polls.
    env = {**ENV, "VOXSERVE_DATA_DIR": str(data_dir), "VOXSERVE_WORKERS": "2", "VOXSERVE_INTRA_OP_THREADS": "1"}
    server = ServerProcess.started(env, tmp_path / "server-0.log")
    try:
        with client_of(server) as client:
            created = submit(client, BOOK, "wav")
            job_id, total = str(created["id"]), int(created["progress"]["segments_total"])
            assert [chapter["title"] for chapter in created["chapters"]] == ["The Harbour", "The Hills"]
            seen = wait_for(client, job_id, lambda job: job["progress"]["segments_done"] >= 2)
        server.kill()
        assert seen["status"] == "running", seen
        assert 2 <= seen["progress"]["segments_done"] < total, f"{total} segments: make the text longer"

        status, done_before, stored_total = stored_job(data_dir, job_id)
        assert (status, stored_total) == ("running", total)
        assert seen["progress"]["segments_done"] <= done_before < total
        assert len(list((data_dir / "jobs" / job_id).glob("segment-*.pcm"))) >= done_before

        server = ServerProcess.started(env, tmp_path / "server-1.log")
        with client_of(server) as client:
            resumed = finished(client, job_id)  # nothing asks it to: the server resumes it at start
            assert resumed["progress"]["segments_done"] == total
            made_here = metric_value(client, "voxserve_job_segments_total")
            resumed_audio = download(client, job_id)
            again = finished(client, str(submit(client, BOOK, "wav")["id"]))
            uninterrupted_audio = download(client, str(again["id"]))
            captions = {
                name: client.get(f"{JOBS}/{name_id}/captions", params={"caption_format": fmt})
                for name, name_id, fmt in (("resumed", job_id, "vtt"), ("again", again["id"], "vtt"),
                                           ("srt", job_id, "srt"))
            }  # fmt: skip
            chapters = [client.get(f"{JOBS}/{job_id}/captions", params={"caption_format": "srt", "chapter": number})
                        for number in (1, 2, 3)]  # fmt: skip
    finally:
        server.stop()
    # Only the segments not yet on disk at the kill were made again.
    assert made_here == total - done_before
    assert resumed["progress"]["audio_seconds"] == pytest.approx(again["progress"]["audio_seconds"], abs=0.002)
    assert len(resumed_audio) > 44
    assert resumed_audio == uninterrupted_audio
    # Captions beside the file, timed in it (chapter pauses included), the same after a resume.
    assert all(response.status_code == 200 for response in captions.values()), captions
    assert captions["resumed"].text == captions["again"].text
    cues = list(srt.parse(captions["srt"].text))
    spoken = " ".join(cue.content for cue in cues)
    assert all(paragraph in spoken for paragraph in PARAGRAPHS)
    assert all(len(cue.content) <= 42 for cue in cues)
    samples, rate = decode(resumed_audio)
    assert cues[-1].end.total_seconds() == pytest.approx(len(samples) / rate, abs=0.002)
    # The voice's gain to the loudness target, and the limiter, apply to jobs as to speech.
    assert integrated_lufs(samples / 32767, rate) == pytest.approx(-18.0, abs=1.5)
    assert np.max(np.abs(samples)) / 32767 <= 10 ** (-1 / 20)
    vtt = webvtt.from_buffer(io.StringIO(captions["resumed"].text)).captions
    assert [caption.text for caption in vtt] == [cue.content for cue in cues]
    # Each chapter's captions on their own, timed from the chapter's start.
    assert [response.status_code for response in chapters] == [200, 200, 404]
    first, second = (list(srt.parse(response.text)) for response in chapters[:2])
    assert [cue.content for cue in [*first, *second]] == [cue.content for cue in cues]
    offset = cues[len(first)].start - second[0].start
    assert offset.total_seconds() > CHAPTER_PAUSE_S
    # Each file's times are rounded to the millisecond on their own: the same offset, within one.
    assert all(abs((a.start - b.start - offset).total_seconds()) <= 0.001
               for a, b in zip(cues[len(first) :], second, strict=True))  # fmt: skip


def test_a_stopping_server_closes_a_job_follower_after_its_shutdown_timeout(tmp_path: Path) -> None:
    """uvicorn waits for open responses on SIGTERM; one client following a long job must not hold it for the job's
    whole length. The job stays `running` on disk, to resume at the next start."""
    data_dir = tmp_path / "data"
    env = {**ENV, "VOXSERVE_DATA_DIR": str(data_dir), "VOXSERVE_SHUTDOWN_TIMEOUT_S": "1"}
    server = ServerProcess.started(env, tmp_path / "server.log")
    events: list[str] = []
    try:
        with client_of(server) as client:
            job_id = str(submit(client, "\n\n".join([BOOK] * 20), "wav")["id"])  # minutes of work
            with client.stream("GET", f"{JOBS}/{job_id}/events") as stream:
                lines = stream.iter_lines()
                events.append(next(line for line in lines if line.startswith("data:")))  # following it now
                stopping = time.monotonic()
                server.process.terminate()
                with pytest.raises(httpx.RemoteProtocolError):  # closed under it, not ended with a final event
                    events.extend(lines)
            server.process.wait(timeout=60)
            stopped_s = time.monotonic() - stopping
    finally:
        server.stop()
    assert stopped_s < 30, f"the follower held the server {stopped_s:.0f} s"
    assert not any('"completed"' in event for event in events)
    status, done, total = stored_job(data_dir, job_id)
    assert status == "running"
    assert done < total


def test_an_m4b_book_has_aac_audio_and_its_chapter_marks(tmp_path: Path) -> None:
    server = ServerProcess.started({**ENV, "VOXSERVE_DATA_DIR": str(tmp_path / "data")}, tmp_path / "server.log")
    try:
        with client_of(server) as client:
            job = finished(client, str(submit(client, SHORT_BOOK, "m4b")["id"]))
            response = client.get(f"{JOBS}/{job['id']}/audio")
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mp4"
    with av.open(io.BytesIO(response.content)) as container:
        codec = container.streams.audio[0].codec_context.name
        chapters = container.chapters()
    samples, rate = decode(response.content)
    duration_s = len(samples) / rate
    # Each chapter is one segment; only the first chapter pauses after it (a paragraph's pause gives way to it).
    expected_s = job["progress"]["audio_seconds"] + CHAPTER_PAUSE_S
    assert codec == "aac"
    assert [chapter["metadata"]["title"] for chapter in chapters] == ["Morning", "Evening"]
    starts = [float(chapter["start"] * chapter["time_base"]) for chapter in chapters]
    assert starts[0] == 0.0
    assert CHAPTER_PAUSE_S < starts[1] < duration_s - 0.5
    assert duration_s == pytest.approx(expected_s, abs=0.05)
