"""`KeyStore`: API keys in the data directory's SQLite, kept as SHA-256 hashes only.

A key reads `vx-<id>-<secret>`: the id finds the row, the hash of the whole key is compared in constant time.
The secret is 256 random bits, so a plain hash (not a slow password hash) is enough to make a stolen database
useless for calling the server."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    requests_per_minute INTEGER,
    max_streams INTEGER,
    chars_per_day INTEGER
)
"""
KEY_PREFIX = "vx"
SCOPES = ("speech", "voices", "admin")
# Limits are stored as SQLite integers; no key needs more than this, and anything larger would not fit.
MAX_LIMIT = 10**12


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Per-key limits; `None` = the server's default for that limit, 0 = none."""

    requests_per_minute: int | None = None
    max_streams: int | None = None
    chars_per_day: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored: never the key itself."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    limits: KeyLimits = KeyLimits()


class KeyStore:
    """Safe from several threads; every call is one short transaction. Keys made by `voxserve keys create`
    while the server runs are seen by its next request."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / "voxserve.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def create(self, name: str, scopes: tuple[str, ...], limits: KeyLimits = KeyLimits()) -> tuple[ApiKey, str]:
        """A new key and its secret form (shown once). Raises `ValueError` for an unknown scope and
        `sqlite3.IntegrityError` for a name that is taken."""
        unknown = set(scopes) - set(SCOPES)
        if not scopes or unknown:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
        given = [limit for limit in (limits.requests_per_minute, limits.max_streams, limits.chars_per_day) if limit]
        if any(limit < 0 or limit > MAX_LIMIT for limit in given):
            raise ValueError(f"limits must be between 0 and {MAX_LIMIT}")
        key = ApiKey(secrets.token_hex(6), name, tuple(dict.fromkeys(scopes)), time.time(), limits)
        secret = f"{KEY_PREFIX}-{key.id}-{secrets.token_urlsafe(32)}"
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key.id, name, hash_key(secret), ",".join(key.scopes), key.created_at,
                 limits.requests_per_minute, limits.max_streams, limits.chars_per_day),
            )  # fmt: skip
        return key, secret

    def verify(self, secret: str) -> ApiKey | None:
        """The key `secret` is, or `None`."""
        parts = secret.split("-", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM api_keys WHERE id = ?", (parts[1],)).fetchone()
        if row is None or not hmac.compare_digest(row[2], hash_key(secret)):
            return None
        return _key(row)

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM api_keys ORDER BY created_at").fetchall()
        return [_key(row) for row in rows]

    def find(self, id_or_name: str) -> ApiKey | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM api_keys WHERE id = ? OR name = ?", (id_or_name, id_or_name)
            ).fetchone()
        return _key(row) if row else None

    def delete(self, id_or_name: str) -> ApiKey | None:
        """Remove a key; its requests fail from the next one on. `None` if there was no such key."""
        key = self.find(id_or_name)
        if key is not None:
            with self._lock:
                self._db.execute("DELETE FROM api_keys WHERE id = ?", (key.id,))
        return key

    def any(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(row: tuple[object, ...]) -> ApiKey:
    key_id, name, _, scopes, created_at, rpm, streams, chars = row
    limits = KeyLimits(rpm, streams, chars)  # type: ignore[arg-type]
    return ApiKey(str(key_id), str(name), tuple(str(scopes).split(",")), float(created_at), limits)  # type: ignore[arg-type]
