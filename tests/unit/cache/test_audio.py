from __future__ import annotations

from pathlib import Path

from voxserve.cache.audio import AudioCache, CachedAudio, audio_cache_key

A, B, C = (audio_cache_key(text=text) for text in "abc")


def entry(body: bytes) -> CachedAudio:
    return CachedAudio(body, "audio/mpeg", "voice", 22050, 1.5)


def test_key_covers_every_part() -> None:
    assert audio_cache_key(text="a", speed=1.0) == audio_cache_key(speed=1.0, text="a")
    assert audio_cache_key(text="a", speed=1.0) != audio_cache_key(text="a", speed=1.5)


def test_disk_entries_survive_a_new_cache_and_promote_to_memory(tmp_path: Path) -> None:
    timed = CachedAudio(b"mp3 bytes", "audio/mpeg", "voice", 22050, 1.5, {"text": "Hi.", "words": [{"text": "Hi"}]})
    AudioCache(1000, tmp_path, 10_000).put(A, timed)
    reopened = AudioCache(1000, tmp_path, 10_000)
    assert reopened.get(A) == timed
    assert reopened.stats()["audio_disk"].hits == 1
    assert reopened.get(A) == timed
    assert reopened.stats()["audio_memory"].hits == 1


def test_disk_budget_evicts_files(tmp_path: Path) -> None:
    cache = AudioCache(0, tmp_path, 25)
    for key in (A, B, C):
        cache.put(key, entry(b"x" * 10))
    assert sorted(path.name for path in tmp_path.glob("*.audio")) == sorted([f"{B}.audio", f"{C}.audio"])
    assert cache.get(A) is None
    assert cache.stats()["audio_disk"].evictions == 1


def test_unreadable_disk_entry_is_dropped(tmp_path: Path) -> None:
    cache = AudioCache(0, tmp_path, 1000)
    cache.put(A, entry(b"bytes"))
    (tmp_path / f"{A}.json").write_text("{broken")
    assert cache.get(A) is None
    assert not (tmp_path / f"{A}.audio").exists()


def test_memory_only_cache_has_no_disk(tmp_path: Path) -> None:
    cache = AudioCache(100)
    cache.put(A, entry(b"bytes"))
    assert cache.get(A) == entry(b"bytes")
    assert set(cache.stats()) == {"audio_memory"}
    assert not AudioCache(0).enabled


def test_only_the_shape_of_a_key_is_looked_up(tmp_path: Path) -> None:
    cache = AudioCache(1000, tmp_path / "cache", 1000)
    (tmp_path / "secret.audio").write_bytes(b"not yours")
    (tmp_path / "secret.json").write_text('{"content_type": "x", "voice_id": "v", "sample_rate": 1, "audio_s": 1}')
    assert cache.get("../secret") is None
    assert cache.get(A.upper()) is None
    assert cache.get(A[:-1]) is None
