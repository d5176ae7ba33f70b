"""`LruCache`: a thread-safe least-recently-used map with a size budget and hit/miss/eviction counts."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0
    size: int = 0


class LruCache(Generic[K, V]):
    """Evicts least-recently-used entries once the summed `sizeof` of the values exceeds `capacity`
    (by default each entry has size 1, so `capacity` counts entries). A capacity of 0 stores nothing."""

    def __init__(self, capacity: int, sizeof: Callable[[V], int] = lambda _: 1) -> None:
        self.capacity = capacity
        self._sizeof = sizeof
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._stats = CacheStats()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self._stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self._stats.hits += 1
            return value

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """Store `value`; return what was evicted to make room (a value larger than the budget is not stored)."""
        size = self._sizeof(value)
        if size > self.capacity:
            return []
        evicted = []
        with self._lock:
            if key in self._entries:
                self._stats.size -= self._sizeof(self._entries.pop(key))
            self._entries[key] = value
            self._stats.size += size
            while self._stats.size > self.capacity:
                old_key, old_value = self._entries.popitem(last=False)
                self._stats.size -= self._sizeof(old_value)
                self._stats.evictions += 1
                evicted.append((old_key, old_value))
            self._stats.entries = len(self._entries)
        return evicted

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(**{name: getattr(self._stats, name) for name in CacheStats.__slots__})
