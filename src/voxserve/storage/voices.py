"""`VoiceStore`: custom voices on disk. One SQLite row per voice; its reference recording (FLAC) and features
(NumPy arrays) in a directory named by its id, written completely before the row that makes it visible."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxserve.audio.encode import create_encoder
from voxserve.conversion.features import VoiceFeatures

SCHEMA = """
CREATE TABLE IF NOT EXISTS voices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    base_voice TEXT NOT NULL,
    created_at REAL NOT NULL,
    reference_s REAL NOT NULL,
    sample_rate INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    owner TEXT,
    shared INTEGER NOT NULL DEFAULT 0
)
"""
# Databases made before voices had owners gain the columns; their voices have no owner (every key sees them).
MIGRATIONS = (
    "ALTER TABLE voices ADD COLUMN owner TEXT",
    "ALTER TABLE voices ADD COLUMN shared INTEGER NOT NULL DEFAULT 0",
)
COLUMNS = "id, name, base_voice, created_at, reference_s, sample_rate, sha256, owner, shared"
FEATURES_FILE = "features.npz"
REFERENCE_FILE = "reference.flac"
STALE_PARTIAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class CustomVoice:
    id: str
    name: str
    base_voice: str
    created_at: float
    reference_s: float
    sample_rate: int
    sha256: str
    owner: str | None = None
    shared: bool = False


class VoiceStore:
    """Safe from several threads; every call is one short transaction."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "voices"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / "voxserve.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._migrate()
        self._lock = threading.Lock()
        self._remove_orphans()

    def add(self, voice: CustomVoice, features: VoiceFeatures, reference: np.ndarray) -> None:
        """Persist a voice; raises `sqlite3.IntegrityError` if its id or name is taken (nothing is left behind)."""
        staging = self.directory / f".{voice.id}.partial"
        staging.mkdir()
        try:
            np.savez(staging / FEATURES_FILE, **features.to_arrays())
            encoder = create_encoder("flac", voice.sample_rate)
            (staging / REFERENCE_FILE).write_bytes(encoder.encode(reference) + encoder.flush())
            staging.rename(self.directory / voice.id)
            with self._lock:
                self._db.execute(
                    f"INSERT INTO voices ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (voice.id, voice.name, voice.base_voice, voice.created_at, voice.reference_s,
                     voice.sample_rate, voice.sha256, voice.owner, int(voice.shared)),
                )  # fmt: skip
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(self.directory / voice.id, ignore_errors=True)
            raise

    def find(self, id_or_name: str) -> CustomVoice | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {COLUMNS} FROM voices WHERE id = ? OR name = ?", (id_or_name, id_or_name)
            ).fetchone()
        return _voice(row) if row else None

    def list(self) -> list[CustomVoice]:
        with self._lock:
            rows = self._db.execute(f"SELECT {COLUMNS} FROM voices ORDER BY created_at").fetchall()
        return [_voice(row) for row in rows]

    def features(self, voice: CustomVoice) -> VoiceFeatures:
        with np.load(self.directory / voice.id / FEATURES_FILE) as arrays:
            return VoiceFeatures.from_arrays(dict(arrays))

    def set_shared(self, voice: CustomVoice, shared: bool) -> CustomVoice:
        with self._lock:
            self._db.execute("UPDATE voices SET shared = ? WHERE id = ?", (int(shared), voice.id))
        return dataclasses.replace(voice, shared=shared)

    def delete(self, voice: CustomVoice) -> bool:
        """Remove a voice; `False` if it was already gone. The row goes first, so a crash leaves only an orphan
        directory, removed at the next start."""
        with self._lock:
            deleted = self._db.execute("DELETE FROM voices WHERE id = ?", (voice.id,)).rowcount
        shutil.rmtree(self.directory / voice.id, ignore_errors=True)
        return bool(deleted)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(voices)")}
        for statement in MIGRATIONS:
            if statement.split(" ADD COLUMN ")[1].split()[0] not in present:
                self._db.execute(statement)

    def _remove_orphans(self) -> None:
        with self._lock:
            known = {row[0] for row in self._db.execute("SELECT id FROM voices")}
        stale_before = time.time() - STALE_PARTIAL_S
        for path in self.directory.iterdir():
            # Another process may be writing a partial directory right now; only old ones are abandoned.
            partial = path.name.startswith(".")
            if path.is_dir() and path.name not in known and (not partial or path.stat().st_mtime < stale_before):
                shutil.rmtree(path, ignore_errors=True)


def _voice(row: tuple[object, ...]) -> CustomVoice:
    *fields, shared = row
    return CustomVoice(*fields, shared=bool(shared))  # type: ignore[arg-type]


def new_voice_id() -> str:
    return f"voice_{secrets.token_hex(8)}"
