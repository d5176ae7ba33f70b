"""`JobStore`: a finished job stays finished, segments are durable and verified, deletes leave nothing behind."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import numpy as np

from voxserve.storage.jobs import Job, JobPart, JobSegment, JobStore, new_job_id


def make_job(store: JobStore, segments: int = 3) -> Job:
    job = Job(
        id=new_job_id(), owner=None, kind="speech", status="queued", created_at=time.time(), started_at=None,
        finished_at=None, request={"voice": "fake"}, error=None, error_code=None, segments_total=segments,
        segments_done=0, chars_total=segments * 5, chars_done=0, audio_s=0.0, sample_rate=1000,
    )  # fmt: skip
    parts = [JobPart(0, "One")]
    store.create(job, parts, [JobSegment(n, 0, f"Seg {n}", 0) for n in range(segments)])
    return job


def test_a_cancel_that_came_first_is_never_overwritten(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = make_job(store)
    assert store.set_status(job.id, "cancelled")
    assert not store.set_status(job.id, "running")  # a runner that started late must stop, not resume it
    assert not store.set_status(job.id, "completed")
    stored = store.get(job.id)
    assert stored is not None
    assert stored.status == "cancelled"
    assert stored.finished_at is not None


def test_a_saved_segment_counts_once_and_a_damaged_one_is_found(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = make_job(store)
    segment = store.segments(job.id)[1]
    audio = np.linspace(-0.5, 0.5, 100, dtype=np.float32)
    saved = store.save_segment(job.id, segment, audio, 1000)
    store.save_segment(job.id, segment, audio, 1000)  # written again (a retry): counted once
    stored = store.get(job.id)
    assert stored is not None
    assert (stored.segments_done, stored.chars_done, stored.audio_s) == (1, len(segment.text), 0.1)
    assert store.verify_segment(job.id, saved)
    assert np.allclose(store.read_segment(job.id, saved), audio, atol=1 / 32767)
    store.segment_path(job.id, 1).write_bytes(b"\x00" * 200)  # same length, other bytes
    assert not store.verify_segment(job.id, saved)
    store.reset_segment(job.id, saved, 1000)
    assert not store.segments(job.id)[1].done
    assert store.get(job.id).segments_done == 0  # type: ignore[union-attr]


def test_delete_removes_rows_and_files_and_orphans_go_at_the_next_start(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    kept, gone = make_job(store), make_job(store)
    assert store.delete(gone.id)
    assert store.get(gone.id) is None
    assert store.segments(gone.id) == []
    assert not store.job_dir(gone.id).exists()
    orphan = store.directory / "job_orphan"
    orphan.mkdir()
    store.close()
    reopened = JobStore(tmp_path)
    assert not orphan.exists()
    assert reopened.job_dir(kept.id).exists()


def test_a_segments_word_places_are_kept_and_an_older_database_gains_their_column(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "voxserve.sqlite3")) as db:  # as the first release made it
        db.execute("CREATE TABLE job_segments (job_id TEXT NOT NULL, segment INTEGER NOT NULL, part INTEGER NOT NULL, "
                   "text TEXT NOT NULL, pause_after_ms INTEGER NOT NULL, samples INTEGER, sha256 TEXT, "
                   "PRIMARY KEY (job_id, segment))")  # fmt: skip
    store = JobStore(tmp_path)
    job = make_job(store)
    first, second = store.segments(job.id)[:2]
    words = ((0, 3, 0, 40), (4, 5, 40, 100))
    store.save_segment(job.id, first, np.zeros(100, dtype=np.float32), 1000, words)
    store.save_segment(job.id, second, np.zeros(100, dtype=np.float32), 1000)
    reread = {segment.index: segment for segment in JobStore(tmp_path).segments(job.id)}
    assert reread[first.index].words == words
    assert reread[second.index].words == ()
    store.reset_segment(job.id, reread[first.index], 1000)
    assert store.segments(job.id)[0].words == ()
