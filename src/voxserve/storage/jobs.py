"""`JobStore`: long-form jobs in the data directory's SQLite, their audio on disk.

A job is a list of parts (a book's chapters, or a batch's items) and of segments (the units a worker synthesizes),
all written in one transaction when the job is made. Each finished segment's audio is written to its own file
(16-bit PCM, fsynced) before its row says done, with its length and SHA-256, so after a crash a job resumes from
its first unfinished segment and a damaged file is found and made again."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxserve.audio.dsp import PCM16_SCALE, to_pcm16

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        owner TEXT,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        request TEXT NOT NULL,
        error TEXT,
        error_code TEXT,
        segments_total INTEGER NOT NULL,
        segments_done INTEGER NOT NULL DEFAULT 0,
        chars_total INTEGER NOT NULL,
        chars_done INTEGER NOT NULL DEFAULT 0,
        audio_s REAL NOT NULL DEFAULT 0,
        sample_rate INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at DESC, id DESC)",
    """CREATE TABLE IF NOT EXISTS job_parts (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        part INTEGER NOT NULL,
        name TEXT NOT NULL,
        request TEXT NOT NULL,
        PRIMARY KEY (job_id, part)
    )""",
    """CREATE TABLE IF NOT EXISTS job_segments (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        segment INTEGER NOT NULL,
        part INTEGER NOT NULL,
        text TEXT NOT NULL,
        pause_after_ms INTEGER NOT NULL,
        samples INTEGER,
        sha256 TEXT,
        words TEXT,
        PRIMARY KEY (job_id, segment)
    )""",
)
# Columns added after a table first shipped: (table, column, type), added to a database that lacks them.
ADDED_COLUMNS = (("job_segments", "words", "TEXT"),)
JOB_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED = frozenset({"completed", "failed", "cancelled"})
JOB_COLUMNS = (
    "id, owner, kind, status, created_at, started_at, finished_at, request, error, error_code, segments_total, "
    "segments_done, chars_total, chars_done, audio_s, sample_rate"
)
SAMPLE_BYTES = 2  # segments are kept as 16-bit PCM: what every output format is made from


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored. `request` holds what the client asked for (voice, format, speed, title...)."""

    id: str
    owner: str | None
    kind: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    request: dict[str, object]
    error: str | None
    error_code: str | None
    segments_total: int
    segments_done: int
    chars_total: int
    chars_done: int
    audio_s: float
    sample_rate: int

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True, slots=True)
class JobPart:
    """A chapter of a book or an item of a batch; `request` holds an item's own fields (voice, format...)."""

    index: int
    name: str
    request: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobSegment:
    """The unit a worker synthesizes; `samples` and `sha256` are set once its audio is on disk, and `words` (each
    word's characters in `text` and samples in the audio: start, end, first, last) with it."""

    index: int
    part: int
    text: str
    pause_after_ms: int
    samples: int | None = None
    sha256: str | None = None
    words: tuple[tuple[int, int, int, int], ...] = ()

    @property
    def done(self) -> bool:
        return self.samples is not None


class JobStore:
    """Safe from several threads; every call is one short transaction."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "jobs"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / "voxserve.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA foreign_keys=ON")
        for statement in SCHEMA:
            self._db.execute(statement)
        for table, column, kind in ADDED_COLUMNS:
            if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self._lock = threading.Lock()
        self._remove_orphans()

    # jobs

    def create(self, job: Job, parts: list[JobPart], segments: list[JobSegment]) -> None:
        """The job, its parts and its segments, all or nothing."""
        self.job_dir(job.id).mkdir()
        try:
            self._insert(job, parts, segments)
        except BaseException:
            shutil.rmtree(self.job_dir(job.id), ignore_errors=True)
            raise

    def _insert(self, job: Job, parts: list[JobPart], segments: list[JobSegment]) -> None:
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                (job.id, job.owner, job.kind, job.status, job.created_at, job.started_at, job.finished_at,
                 json.dumps(job.request), job.error, job.error_code, job.segments_total, job.segments_done,
                 job.chars_total, job.chars_done, job.audio_s, job.sample_rate),
            )  # fmt: skip
            db.executemany(
                "INSERT INTO job_parts (job_id, part, name, request) VALUES (?, ?, ?, ?)",
                [(job.id, part.index, part.name, json.dumps(part.request)) for part in parts],
            )
            db.executemany(
                "INSERT INTO job_segments (job_id, segment, part, text, pause_after_ms) VALUES (?, ?, ?, ?, ?)",
                [(job.id, seg.index, seg.part, seg.text, seg.pause_after_ms) for seg in segments],
            )

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(
        self, *, owner: str | None, every_owner: bool, status: str | None, limit: int, after: str | None
    ) -> list[Job]:
        """Newest first; `after` is the id of the last job of the previous page."""
        where, args = ["1 = 1"], []
        if not every_owner:
            where.append("owner IS ?")
            args.append(owner)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        with self._lock:
            if after is not None:
                cursor = self._db.execute("SELECT created_at, id FROM jobs WHERE id = ?", (after,)).fetchone()
                if cursor is not None:
                    where.append("(created_at, id) < (?, ?)")
                    args += list(cursor)
            rows = self._db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_job(row) for row in rows]

    def unfinished(self) -> list[Job]:
        """Jobs to run: those that were running first (a restart resumes them), then the queued, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('running', 'queued') "
                "ORDER BY status = 'queued', created_at, id"
            ).fetchall()
        return [_job(row) for row in rows]

    def set_status(self, job_id: str, status: str, *, error: str | None = None, code: str | None = None) -> bool:
        """Move an unfinished job to `status`; `False` when it has already finished (a cancel that came first
        stays cancelled, whatever its runner was about to write)."""
        now = time.time()
        with self._lock:
            return bool(
                self._db.execute(
                    "UPDATE jobs SET status = ?, error = ?, error_code = ?, "
                    "started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END, "
                    "finished_at = CASE WHEN ? IN ('completed', 'failed', 'cancelled') THEN ? ELSE finished_at END "
                    "WHERE id = ? AND status IN ('queued', 'running')",
                    (status, error, code, status, now, status, now, job_id),
                ).rowcount
            )

    def finished_before(self, when: float) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (when,)
            ).fetchall()
        return [row[0] for row in rows]

    def delete(self, job_id: str) -> bool:
        """The rows go first, so a crash leaves only an orphan directory, removed at the next start."""
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        return bool(deleted)

    # parts and segments

    def parts(self, job_id: str) -> list[JobPart]:
        with self._lock:
            rows = self._db.execute(
                "SELECT part, name, request FROM job_parts WHERE job_id = ? ORDER BY part", (job_id,)
            ).fetchall()
        return [JobPart(index, name, json.loads(request)) for index, name, request in rows]

    def segments(self, job_id: str) -> list[JobSegment]:
        with self._lock:
            rows = self._db.execute(
                "SELECT segment, part, text, pause_after_ms, samples, sha256, words FROM job_segments "
                "WHERE job_id = ? ORDER BY segment",
                (job_id,),
            ).fetchall()
        return [JobSegment(*row[:6], words=_words(row[6])) for row in rows]

    def save_segment(
        self, job_id: str, segment: JobSegment, samples: np.ndarray, sample_rate: int,
        words: tuple[tuple[int, int, int, int], ...] = (),
    ) -> JobSegment:  # fmt: skip
        """Write a segment's audio (as 16-bit PCM), durably, then mark it done (with its words' places, for
        captions) and count it in the job's progress."""
        data = to_pcm16(samples)
        frames = len(data) // SAMPLE_BYTES
        path = self.segment_path(job_id, segment.index)
        staging = path.with_suffix(".partial")
        with staging.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        staging.replace(path)
        digest = hashlib.sha256(data).hexdigest()
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE job_segments SET samples = ?, sha256 = ?, words = ? WHERE job_id = ? AND segment = ? "
                "AND samples IS NULL",
                (frames, digest, json.dumps(words), job_id, segment.index),
            ).rowcount
            if updated:
                db.execute(
                    "UPDATE jobs SET segments_done = segments_done + 1, chars_done = chars_done + ?, "
                    "audio_s = audio_s + ?, sample_rate = ? WHERE id = ?",
                    (len(segment.text), frames / sample_rate, sample_rate, job_id),
                )
        return JobSegment(segment.index, segment.part, segment.text, segment.pause_after_ms, frames, digest, words)

    def verify_segment(self, job_id: str, segment: JobSegment) -> bool:
        """Whether a done segment's file is whole (its length and SHA-256 as recorded)."""
        try:
            data = self.segment_path(job_id, segment.index).read_bytes()
        except OSError:
            return False
        return len(data) == (segment.samples or 0) * SAMPLE_BYTES and hashlib.sha256(data).hexdigest() == segment.sha256

    def reset_segment(self, job_id: str, segment: JobSegment, sample_rate: int) -> None:
        """Mark a damaged segment not done, so it is made again."""
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE job_segments SET samples = NULL, sha256 = NULL, words = NULL WHERE job_id = ? AND segment = ? "
                "AND samples IS NOT NULL",
                (job_id, segment.index),
            ).rowcount
            if updated:
                db.execute(
                    "UPDATE jobs SET segments_done = segments_done - 1, chars_done = chars_done - ?, "
                    "audio_s = audio_s - ? WHERE id = ?",
                    (len(segment.text), (segment.samples or 0) / max(sample_rate, 1), job_id),
                )
        self.segment_path(job_id, segment.index).unlink(missing_ok=True)

    def read_segment(self, job_id: str, segment: JobSegment) -> np.ndarray:
        """A done segment's audio as float32."""
        pcm = np.fromfile(self.segment_path(job_id, segment.index), dtype="<i2")
        return pcm.astype(np.float32) / PCM16_SCALE

    # files

    def job_dir(self, job_id: str) -> Path:
        return self.directory / job_id

    def segment_path(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / f"segment-{index:06d}.pcm"

    def disk_bytes(self) -> int:
        """Bytes every job's files take."""
        return sum(path.stat().st_size for path in self.directory.rglob("*") if path.is_file())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    def _remove_orphans(self) -> None:
        with self._lock:
            known = {row[0] for row in self._db.execute("SELECT id FROM jobs")}
        for path in self.directory.iterdir():
            if path.is_dir() and path.name not in known:
                shutil.rmtree(path, ignore_errors=True)


class _Transaction:
    """`with`: one write transaction under the store's lock, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self._lock.release()


def _job(row: tuple[object, ...]) -> Job:
    values = list(row)
    values[7] = json.loads(str(values[7]))
    return Job(*values)  # type: ignore[arg-type]


def new_job_id() -> str:
    return f"job_{secrets.token_hex(8)}"


def _words(stored: str | None) -> tuple[tuple[int, int, int, int], ...]:
    return tuple(tuple(word) for word in json.loads(stored)) if stored else ()  # type: ignore[misc]
