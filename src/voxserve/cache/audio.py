"""`AudioCache`: finished response bodies by content address, in memory and optionally on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from voxserve.cache.lru import CacheStats, LruCache

logger = logging.getLogger(__name__)
_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class CachedAudio:
    body: bytes
    content_type: str
    voice_id: str
    sample_rate: int
    audio_s: float
    timings: Mapping[str, object] | None = None  # JSON-ready, what the service recorded of the audio's timing


def audio_cache_key(**parts: object) -> str:
    """A content address over everything that determines the bytes of a response."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def is_cache_key(text: str) -> bool:
    """Whether `text` is the shape of a key: anything else (a client's guess, a path) is never looked up."""
    return _KEY.fullmatch(text) is not None


class AudioCache:
    """Memory LRU within `memory_bytes`; with a `directory`, a disk LRU within `disk_bytes` behind it (entries
    survive restarts; the directory is indexed at start-up)."""

    def __init__(self, memory_bytes: int, directory: Path | None = None, disk_bytes: int = 0) -> None:
        self.memory: LruCache[str, CachedAudio] = LruCache(memory_bytes, lambda entry: len(entry.body))
        self.disk: LruCache[str, int] | None = None
        self._directory = directory
        if directory is not None and disk_bytes > 0:
            directory.mkdir(parents=True, exist_ok=True)
            self.disk = LruCache(disk_bytes, lambda size: size)
            self._index_directory(directory, self.disk)

    @property
    def enabled(self) -> bool:
        return self.memory.capacity > 0 or self.disk is not None

    def get(self, key: str) -> CachedAudio | None:
        if not is_cache_key(key):
            return None
        entry = self.memory.get(key)
        if entry is None and self.disk is not None and self.disk.get(key) is not None:
            entry = self._read(key)
            if entry is not None:
                self.memory.put(key, entry)
        return entry

    def put(self, key: str, entry: CachedAudio) -> None:
        self.memory.put(key, entry)
        if self.disk is not None:
            self._write(key, entry)
            for evicted_key, _ in self.disk.put(key, len(entry.body)):
                self._remove(evicted_key)

    def stats(self) -> dict[str, CacheStats]:
        stats = {"audio_memory": self.memory.stats()}
        if self.disk is not None:
            stats["audio_disk"] = self.disk.stats()
        return stats

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self._directory is not None
        return self._directory / f"{key}.audio", self._directory / f"{key}.json"

    def _write(self, key: str, entry: CachedAudio) -> None:
        body_path, meta_path = self._paths(key)
        meta = {name: value for name, value in asdict(entry).items() if name != "body"}
        for path, data in ((body_path, entry.body), (meta_path, json.dumps(meta).encode())):
            partial = path.with_suffix(path.suffix + ".partial")
            partial.write_bytes(data)
            os.replace(partial, path)

    def _read(self, key: str) -> CachedAudio | None:
        body_path, meta_path = self._paths(key)
        try:
            return CachedAudio(body=body_path.read_bytes(), **json.loads(meta_path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("dropping unreadable audio cache entry %s: %s", key, exc)
            self._remove(key)
            return None

    def _remove(self, key: str) -> None:
        for path in self._paths(key):
            path.unlink(missing_ok=True)

    def _index_directory(self, directory: Path, disk: LruCache[str, int]) -> None:
        bodies = sorted(directory.glob("*.audio"), key=lambda path: path.stat().st_mtime)
        for body_path in bodies:
            if body_path.with_suffix(".json").is_file():
                for evicted_key, _ in disk.put(body_path.stem, body_path.stat().st_size):
                    self._remove(evicted_key)
