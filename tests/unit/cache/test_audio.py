from __future__ import annotations

from pathlib import Path

from voxserve.cache.audio import AudioCache, CachedAudio, audio_cache_key


def entry(body: bytes) -> CachedAudio:
    return CachedAudio(body, "audio/mpeg", "voice", 22050, 1.5)


def test_key_covers_every_part() -> None:
    assert audio_cache_key(text="a", speed=1.0) == audio_cache_key(speed=1.0, text="a")
    assert audio_cache_key(text="a", speed=1.0) != audio_cache_key(text="a", speed=1.5)


def test_disk_entries_survive_a_new_cache_and_promote_to_memory(tmp_path: Path) -> None:
    AudioCache(1000, tmp_path, 10_000).put("k", entry(b"mp3 bytes"))
    reopened = AudioCache(1000, tmp_path, 10_000)
    assert reopened.get("k") == entry(b"mp3 bytes")
    assert reopened.stats()["audio_disk"].hits == 1
    assert reopened.get("k") == entry(b"mp3 bytes")
    assert reopened.stats()["audio_memory"].hits == 1


def test_disk_budget_evicts_files(tmp_path: Path) -> None:
    cache = AudioCache(0, tmp_path, 25)
    for key in ("a", "b", "c"):
        cache.put(key, entry(b"x" * 10))
    assert sorted(path.name for path in tmp_path.glob("*.audio")) == ["b.audio", "c.audio"]
    assert cache.get("a") is None
    assert cache.stats()["audio_disk"].evictions == 1


def test_unreadable_disk_entry_is_dropped(tmp_path: Path) -> None:
    cache = AudioCache(0, tmp_path, 1000)
    cache.put("k", entry(b"bytes"))
    (tmp_path / "k.json").write_text("{broken")
    assert cache.get("k") is None
    assert not (tmp_path / "k.audio").exists()


def test_memory_only_cache_has_no_disk(tmp_path: Path) -> None:
    cache = AudioCache(100)
    cache.put("k", entry(b"bytes"))
    assert cache.get("k") == entry(b"bytes")
    assert set(cache.stats()) == {"audio_memory"}
    assert not AudioCache(0).enabled
