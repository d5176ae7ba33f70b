from __future__ import annotations

from voxserve.cache.lru import LruCache


def test_counts_hits_misses_and_evicts_least_recently_used() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    evicted = cache.put("c", 3)
    assert evicted == [("b", 2)]
    assert cache.get("b") is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.entries) == (1, 1, 1, 2)


def test_budget_by_size_and_oversized_values_are_not_stored() -> None:
    cache: LruCache[str, bytes] = LruCache(10, len)
    cache.put("six", b"123456")
    cache.put("five", b"12345")
    assert cache.get("six") is None
    assert cache.put("huge", b"x" * 11) == []
    assert cache.get("huge") is None
    assert cache.stats().size == 5


def test_zero_capacity_stores_nothing() -> None:
    cache: LruCache[str, int] = LruCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None
