"""Long-form jobs over HTTP, in-process around `FakeEngine` (1 kHz audio, one sample per character), so every
length is exact: submit, progress, audio (whole, Range, chapters, items, ZIP), cancel, delete, retention, the disk
budget, bad uploads, ownership, and resuming a job whose process stopped."""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.fakes import FAKE_SERVER, FAKE_VOICE, TONE_VOICE, FakeEngine, ToneEngine
from tests.unit.api.inprocess import READY_WAIT_S, AsgiCall, running_app
from voxserve.audio.loudness import db_to_gain, integrated_lufs
from voxserve.errors import NotFoundError
from voxserve.service.bootstrap import Services
from voxserve.settings import Settings
from voxserve.storage.jobs import JobStore
from voxserve.storage.keys import KeyStore
from voxserve.types import Caller

JOBS = "/v1/audio/jobs"
BOOK = "# One\n\nHello there.\n\nSecond paragraph.\n\n# Two\n\nThe end."
# One segment per paragraph: 12 + 17 + 8 samples, 600 ms after a paragraph, 2000 ms after a chapter (not the last).
BOOK_SAMPLES = 12 + 600 + 17 + 2000 + 8
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings(tmp_path: Path, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        **FAKE_SERVER, "data_dir": tmp_path,
        "workers": 1, "express_worker": False, "max_segment_chars": 40, "first_segment_max_chars": 16,
    }  # fmt: skip
    return Settings(**{**fields, **overrides})  # type: ignore[arg-type]


@asynccontextmanager
async def served(
    tmp_path: Path, engine: FakeEngine | None = None, **overrides: object
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    async with running_app(settings(tmp_path, **overrides), [engine or FakeEngine()]) as (app, services):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            yield client, services


async def submit(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post(JOBS, json={"voice": "fake", "response_format": "wav", **body})
    assert response.status_code == 202, response.text
    return response.json()


async def finished(client: httpx.AsyncClient, job_id: str, **headers: str) -> dict[str, object]:
    """The job once it has finished (bounded far beyond what a loaded machine needs)."""
    async with asyncio.timeout(READY_WAIT_S):
        while True:
            job = (await client.get(f"{JOBS}/{job_id}", headers=headers)).json()
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.02)


def wav_frames(data: bytes) -> int:
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getframerate() == FAKE_VOICE.sample_rate
        return reader.getnframes()


async def test_a_book_renders_with_its_chapters_and_pauses(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, services):
        created = await submit(client, input=BOOK, input_format="markdown", title="A test")
        assert created["status"] == "queued"
        assert created["chapters"] == [{"number": 1, "title": "One"}, {"number": 2, "title": "Two"}]
        job = await finished(client, str(created["id"]))
        assert job["status"] == "completed", job
        assert job["progress"]["segments_done"] == job["progress"]["segments_total"] == 3
        assert job["progress"]["audio_seconds"] == pytest.approx((12 + 17 + 8) / 1000)
        whole = await client.get(f"{JOBS}/{job['id']}/audio")
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "audio/wav"
        assert wav_frames(whole.content) == BOOK_SAMPLES
        ranged = await client.get(f"{JOBS}/{job['id']}/audio", headers={"Range": "bytes=44-143"})
        assert ranged.status_code == 206
        assert ranged.content == whole.content[44:144]
        second = await client.get(f"{JOBS}/{job['id']}/chapters/2/audio")
        assert second.status_code == 200
        assert len(second.content) == 44 + 8 * 2  # a streamed WAV: header, then "The end." and no pause after
        missing = await client.get(f"{JOBS}/{job['id']}/chapters/3/audio")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "chapter_not_found")
    metrics = services.telemetry.metrics.registry
    assert metrics.get_sample_value("voxserve_jobs_total", {"status": "completed"}) == 1
    assert metrics.get_sample_value("voxserve_job_segments_total") == 3


async def test_an_m4b_book_has_its_chapter_marks(tmp_path: Path) -> None:
    import av

    async with served(tmp_path) as (client, _):
        created = await submit(client, input=BOOK, input_format="markdown", response_format="m4b")
        job = await finished(client, str(created["id"]))
        assert job["status"] == "completed", job
        response = await client.get(f"{JOBS}/{job['id']}/audio")
    assert response.headers["content-type"] == "audio/mp4"
    with av.open(io.BytesIO(response.content)) as container:
        chapters = container.chapters()
        assert container.streams.audio[0].codec_context.name == "aac"
    titles = [chapter["metadata"]["title"] for chapter in chapters]
    starts = [float(chapter["start"] * chapter["time_base"]) for chapter in chapters]
    assert titles == ["One", "Two"]
    assert starts == pytest.approx([0.0, (12 + 600 + 17 + 2000) / 1000], abs=0.002)


async def test_a_batch_makes_one_file_per_item_and_a_zip(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, _):
        items = [
            {"id": "greeting", "input": "Hi there."},
            {"id": "bye.v2", "input": "Bye now.", "response_format": "flac"},
        ]
        created = await submit(client, items=items)
        assert [item["id"] for item in created["items"]] == ["greeting", "bye.v2"]
        job = await finished(client, str(created["id"]))
        assert job["status"] == "completed", job
        greeting = await client.get(f"{JOBS}/{job['id']}/items/greeting/audio")
        assert wav_frames(greeting.content) == len("Hi there.")
        bye = await client.get(f"{JOBS}/{job['id']}/items/bye.v2/audio")
        assert bye.headers["content-type"] == "audio/flac"
        archive = await client.get(f"{JOBS}/{job['id']}/items.zip")
        assert archive.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as unzipped:
            assert sorted(unzipped.namelist()) == ["bye.v2.flac", "greeting.wav"]
            assert unzipped.read("greeting.wav") == greeting.content
        whole = await client.get(f"{JOBS}/{job['id']}/audio")
        assert whole.status_code == 400  # a batch has no single file
        unknown = await client.get(f"{JOBS}/{job['id']}/items/nope/audio")
        assert unknown.status_code == 404


async def test_a_jsonl_upload_is_a_batch_and_a_text_file_a_book(tmp_path: Path) -> None:
    lines = b'{"id": "a", "input": "First one."}\n{"id": "b", "input": "Second one.", "speed": 2}\n'
    async with served(tmp_path) as (client, _):
        batch = await client.post(JOBS, data={"voice": "fake", "response_format": "wav"},
                                  files={"file": ("prompts.jsonl", lines, "application/jsonl")})  # fmt: skip
        assert batch.status_code == 202, batch.text
        assert [item["id"] for item in batch.json()["items"]] == ["a", "b"]
        novel = b"Part 1\n\nIt begins.\n\nPart 2\n\nIt ends."
        fields = {"voice": "fake", "response_format": "wav", "chapter_pattern": r"Part \d+"}
        book = await client.post(JOBS, data=fields, files={"file": ("novel.txt", novel, "text/plain")})
        assert book.status_code == 202, book.text
        assert book.json()["title"] == "novel"
        assert [chapter["title"] for chapter in book.json()["chapters"]] == ["Part 1", "Part 2"]
        for created in (batch.json(), book.json()):
            assert (await finished(client, created["id"]))["status"] == "completed"


@pytest.mark.parametrize(
    ("body", "files", "status", "code"),
    [
        ({"voice": "fake"}, {"file": ("x.bin", b"\x00\x01\xfe\xff", "application/octet-stream")}, 400, "invalid_value"),
        ({"voice": "fake"}, {"file": ("empty.txt", b"   \n\n ", "text/plain")}, 400, "invalid_value"),
        ({"voice": "fake"}, {"file": ("binary.txt", b"ok\x00\xff\xfe", "text/plain")}, 400, "invalid_value"),
        ({"voice": "fake"}, {"file": ("a.jsonl", b'{"id": "a"}\n', "application/jsonl")}, 400, "invalid_value"),
        ({"voice": "nobody"}, {"file": ("a.txt", b"Some text.", "text/plain")}, 404, "voice_not_found"),
        (
            {"voice": "fake", "response_format": "ogg"},
            {"file": ("a.txt", b"Text.", "text/plain")},
            400,
            "invalid_value",
        ),
    ],
    ids=["unknown-format", "empty", "not-utf8", "bad-jsonl", "unknown-voice", "bad-format"],
)
async def test_bad_uploads_get_clear_errors(
    tmp_path: Path, body: dict[str, str], files: dict[str, tuple[str, bytes, str]], status: int, code: str | None
) -> None:
    async with served(tmp_path) as (client, services):
        response = await client.post(JOBS, data=body, files=files)
        assert response.status_code == status, response.text
        assert response.json()["error"]["message"]
        if code is not None:
            assert response.json()["error"]["code"] == code
        assert (await client.get(JOBS)).json()["data"] == []  # nothing was made
        assert not any(services.jobs.store.directory.iterdir())


async def test_input_items_and_file_are_one_of_a_kind_and_long_inputs_get_413(tmp_path: Path) -> None:
    async with served(tmp_path, max_job_chars=50) as (client, _):
        both = await client.post(JOBS, json={"voice": "fake", "input": "Hi.", "items": [{"id": "a", "input": "x"}]})
        assert both.status_code == 400
        neither = await client.post(JOBS, json={"voice": "fake"})
        assert neither.status_code == 400
        long = await client.post(JOBS, json={"voice": "fake", "input": "A sentence that goes on. " * 3})
        assert (long.status_code, long.json()["error"]["code"]) == (413, "input_too_long")
        duplicate = await client.post(
            JOBS, json={"voice": "fake", "items": [{"id": "a", "input": "x."}, {"id": "a", "input": "y."}]}
        )
        assert duplicate.status_code == 400


async def test_a_job_past_the_disk_budget_is_refused_up_front(tmp_path: Path) -> None:
    async with served(tmp_path, jobs_disk_bytes=10) as (client, _):
        response = await client.post(JOBS, json={"voice": "fake", "input": "Too much for ten bytes."})
    assert response.status_code == 507
    assert response.json()["error"]["code"] == "disk_budget_exceeded"


async def test_interactive_speech_overtakes_a_rendering_job_which_can_be_cancelled(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    paragraphs = "\n\n".join(f"Paragraph {n}." for n in range(6))
    async with served(tmp_path, engine) as (client, services):
        created = await submit(client, input=paragraphs)
        assert await asyncio.to_thread(engine.started.wait, READY_WAIT_S)  # "Paragraph 0." holds the one worker
        speech = AsgiCall(client._transport.app, "/v1/audio/speech",  # type: ignore[attr-defined]
                          {"input": "Urgent.", "voice": "fake", "response_format": "wav"})  # fmt: skip
        async with asyncio.timeout(READY_WAIT_S):
            # The job keeps four segments per worker in flight (one running, three queued); then the request's.
            while services.speech.scheduler.queue_depth() < 4:
                await asyncio.sleep(0.01)
        engine.gate.set()
        await speech.finished()
        assert speech.status == 200
        assert engine.ran[:2] == ["Paragraph 0.", "Urgent."]
        cancelled = await client.post(f"{JOBS}/{created['id']}/cancel")
        assert cancelled.status_code == 200
        job = await finished(client, str(created["id"]))
        assert job["status"] == "cancelled"
        again = await client.post(f"{JOBS}/{created['id']}/cancel")
        assert (again.status_code, again.json()["error"]["code"]) == (409, "job_finished")
        runs = len(engine.ran)
        await asyncio.sleep(0.1)
        assert len(engine.ran) == runs  # nothing of the job runs after its cancel
        assert services.speech.scheduler.queue_depth() == 0


async def test_two_jobs_both_make_progress(tmp_path: Path) -> None:
    async with served(tmp_path, max_running_jobs=2, workers=2) as (client, _):
        first = await submit(client, input="\n\n".join(f"Alpha {n}." for n in range(4)))
        second = await submit(client, input="\n\n".join(f"Bravo {n}." for n in range(4)))
        for created in (first, second):
            assert (await finished(client, str(created["id"])))["status"] == "completed"


async def test_events_report_progress_then_the_end(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, _):
        created = await submit(client, input=BOOK, input_format="markdown")
        response = await client.get(f"{JOBS}/{created['id']}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "job.completed"
    assert all(event["type"] == "job.progress" for event in events[:-1])
    done = [event["job"]["progress"]["segments_done"] for event in events]
    assert done == sorted(done)
    assert done[-1] == 3


async def test_audio_follows_a_running_job_to_its_end(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with served(tmp_path, engine) as (client, _):
        created = await submit(client, input=BOOK, input_format="markdown")
        assert await asyncio.to_thread(engine.started.wait, READY_WAIT_S)
        following = asyncio.create_task(client.get(f"{JOBS}/{created['id']}/audio"))
        await asyncio.sleep(0.05)
        engine.gate.set()
        streamed = await following
        await finished(client, str(created["id"]))
        stored = await client.get(f"{JOBS}/{created['id']}/audio")
    assert streamed.status_code == 200
    assert streamed.content[44:] == stored.content[44:]  # the same audio; only the finished file knows its size


async def test_jobs_belong_to_their_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    a, b = ({"Authorization": f"Bearer {store.create(name, ('speech',))[1]}"} for name in ("a", "b"))
    store.close()
    async with served(tmp_path) as (client, _):
        response = await client.post(
            JOBS, json={"voice": "fake", "input": "Mine.", "response_format": "wav"}, headers=a
        )
        job_id = response.json()["id"]
        await finished(client, job_id, **a)
        assert (await client.get(f"{JOBS}/{job_id}", headers=b)).status_code == 404
        assert (await client.get(f"{JOBS}/{job_id}/audio", headers=b)).status_code == 404
        assert (await client.delete(f"{JOBS}/{job_id}", headers=b)).status_code == 404
        assert (await client.get(JOBS, headers=b)).json()["data"] == []
        assert [job["id"] for job in (await client.get(JOBS, headers=a)).json()["data"]] == [job_id]


async def test_listing_is_newest_first_paged_and_filtered(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, _):
        made = [await submit(client, input=f"Job number {n}.") for n in range(3)]
        for created in made:
            await finished(client, str(created["id"]))
        page = (await client.get(JOBS, params={"limit": 2})).json()
        assert [job["id"] for job in page["data"]] == [made[2]["id"], made[1]["id"]]
        assert page["has_more"]
        rest = (await client.get(JOBS, params={"limit": 2, "after": page["last_id"]})).json()
        assert [job["id"] for job in rest["data"]] == [made[0]["id"]]
        assert not rest["has_more"]
        assert (await client.get(JOBS, params={"status": "failed"})).json()["data"] == []
        assert (await client.get(JOBS, params={"status": "bogus"})).status_code == 400


async def test_delete_removes_the_files_and_retention_sweeps_old_jobs(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, services):
        kept, old = (await submit(client, input="Kept."), await submit(client, input="Old."))
        for created in (kept, old):
            await finished(client, str(created["id"]))
        store = services.jobs.store
        deleted = await client.delete(f"{JOBS}/{kept['id']}")
        assert deleted.json() == {"id": kept["id"], "object": "audio.job.deleted", "deleted": True}
        assert not store.job_dir(str(kept["id"])).exists()
        store._db.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (time.time() - 10 * 86400, old["id"]))
        await asyncio.to_thread(services.jobs._sweep)
        assert (await client.get(f"{JOBS}/{old['id']}")).status_code == 404
        assert not store.job_dir(str(old["id"])).exists()


async def test_a_stopped_job_resumes_where_it_stopped_and_remakes_a_damaged_segment(tmp_path: Path) -> None:
    text = "\n\n".join(f"Paragraph number {n}." for n in range(6))
    async with served(tmp_path / "reference") as (client, _):
        reference = await finished(client, str((await submit(client, input=text))["id"]))
        expected = (await client.get(f"{JOBS}/{reference['id']}/audio")).content
    engine = FakeEngine()
    stop_after = 3
    engine.on_run = lambda texts: engine.gate.clear() if len(engine.ran) >= stop_after else None
    async with served(tmp_path / "data", engine) as (client, services):
        created = await submit(client, input=text)
        async with asyncio.timeout(READY_WAIT_S):
            while services.jobs.store.get(str(created["id"])).segments_done < stop_after:
                await asyncio.sleep(0.01)
    # The app stopped with the job running: it stays "running" on disk. Damage one finished segment.
    store = JobStore(tmp_path / "data")
    assert store.get(str(created["id"])).status == "running"
    store.segment_path(str(created["id"]), 1).write_bytes(b"\x00\x00")
    store.close()
    resumed = FakeEngine()
    async with served(tmp_path / "data", resumed) as (client, _):
        job = await finished(client, str(created["id"]))
        audio = (await client.get(f"{JOBS}/{created['id']}/audio")).content
    assert job["status"] == "completed"
    assert resumed.ran == ["Paragraph number 1."] + [f"Paragraph number {n}." for n in range(stop_after, 6)]
    assert audio == expected


async def test_deleting_a_running_job_stops_it_for_good_and_ends_its_watchers(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with served(tmp_path, engine) as (client, services):
        created = await submit(client, input="\n\n".join(f"Paragraph {n}." for n in range(6)))
        job_id = str(created["id"])
        assert await asyncio.to_thread(engine.started.wait, READY_WAIT_S)
        watching = asyncio.create_task(client.get(f"{JOBS}/{job_id}/events"))
        await asyncio.sleep(0.05)
        assert (await client.delete(f"{JOBS}/{job_id}")).status_code == 200
        engine.gate.set()
        watched = await watching
        if watched.status_code == 200:  # a loaded machine may start the watch only after the delete: a clean 404
            events = [json.loads(line[6:]) for line in watched.text.splitlines() if line.startswith("data: ")]
            # The watcher's last event: the cancel a delete begins with, or the deletion itself.
            assert events[-1]["type"] in ("job.cancelled", "job.deleted")
            assert events[-1]["job"]["id"] == job_id
        else:
            assert watched.json()["error"]["code"] == "job_not_found"
        await asyncio.to_thread(services.jobs._sweep)  # a dispatcher round: nothing takes the job up again
        await asyncio.sleep(0.1)
        assert engine.ran == ["Paragraph 0."]
        assert (await client.get(f"{JOBS}/{job_id}")).status_code == 404
        assert not services.jobs.store.job_dir(job_id).exists()
        assert services.speech.scheduler.queue_depth() == 0


async def test_a_batch_item_with_nothing_to_say_is_refused_up_front(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, _):
        response = await client.post(
            JOBS, json={"voice": "fake", "items": [{"id": "ok", "input": "Fine."}, {"id": "blank", "input": "  "}]}
        )
        assert response.status_code == 400
        assert "blank" in response.json()["error"]["message"]
        assert (await client.get(JOBS)).json()["data"] == []


async def test_a_job_made_without_a_key_is_for_admins_once_keys_exist(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, services):
        job_id = str((await submit(client, input="No key made me."))["id"])
        await finished(client, job_id)
        with pytest.raises(NotFoundError):
            services.jobs.get(job_id, Caller(key_id="k1", admin=False))
        assert services.jobs.get(job_id, Caller(key_id="root", admin=True)).job.id == job_id


async def test_a_job_is_brought_to_its_own_loudness_or_left_at_the_voices_level(tmp_path: Path) -> None:
    engine = ToneEngine()
    async with served(tmp_path, engine, loudness_normalization=True, default_voice=TONE_VOICE.id) as (client, _):
        text = "The tone speaks this line for a while, long enough to be measured. " * 4
        bad = await client.post(JOBS, json={"voice": "tone", "input": text, "loudness": -3})
        assert bad.status_code == 400
        assert "loudness" in bad.json()["error"]["message"]
        levels = {}
        for loudness in (-30.0, -36.0, "off"):
            created = await submit(client, voice="tone", input=text, loudness=loudness)
            assert created["loudness"] == loudness
            job = await finished(client, str(created["id"]))
            assert job["status"] == "completed", job
            audio = (await client.get(f"{JOBS}/{job['id']}/audio")).content
            with wave.open(io.BytesIO(audio)) as reader:
                samples = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").astype(np.float64) / 32767
            levels[loudness] = integrated_lufs(samples, TONE_VOICE.sample_rate)
            assert np.max(np.abs(samples)) <= db_to_gain(-1.0)
    assert levels[-30.0] == pytest.approx(-30.0, abs=1.0)
    assert levels[-30.0] - levels[-36.0] == pytest.approx(6.0, abs=0.1)
    assert abs(levels["off"] - levels[-30.0]) > 3.0
