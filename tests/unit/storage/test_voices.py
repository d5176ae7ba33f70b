"""The voice store persists across instances, keeps names unique and leaves nothing half-written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from voxserve.conversion.features import VoiceFeatures
from voxserve.storage.voices import CustomVoice, VoiceStore, new_voice_id

FEATURES = VoiceFeatures(
    duration_s=6.0, voiced_ratio=0.5, log_f0_mean=5.0, log_f0_std=0.2, f0_median_hz=150.0, loudness_dbfs=-20.0,
    envelope_mean=np.arange(40.0), envelope_std=np.ones(40), mean_log_envelope=np.zeros(161),
)  # fmt: skip


def voice(name: str) -> CustomVoice:
    return CustomVoice(new_voice_id(), name, "en_US-joe-medium", 1.0, 6.0, 16_000, "0" * 64)


def test_voices_survive_a_new_store_and_delete_cleanly(tmp_path: Path) -> None:
    first = VoiceStore(tmp_path)
    kept = voice("kept")
    first.add(kept, FEATURES, np.zeros(16_000, dtype=np.float32))
    first.close()
    second = VoiceStore(tmp_path)
    assert second.find("kept") == kept
    assert second.find(kept.id) == kept
    np.testing.assert_array_equal(second.features(kept).envelope_mean, FEATURES.envelope_mean)
    assert second.delete(kept)
    assert not second.delete(kept)
    assert second.find("kept") is None
    assert not (second.directory / kept.id).exists()


def test_a_taken_name_leaves_nothing_behind(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path)
    store.add(voice("same"), FEATURES, np.zeros(1600, dtype=np.float32))
    clash = voice("same")
    with pytest.raises(sqlite3.IntegrityError):
        store.add(clash, FEATURES, np.zeros(1600, dtype=np.float32))
    assert [entry.name for entry in store.list()] == ["same"]
    assert sorted(path.name for path in store.directory.iterdir()) == [store.list()[0].id]


def test_orphan_directories_are_removed_at_start(tmp_path: Path) -> None:
    VoiceStore(tmp_path).close()
    (tmp_path / "voices" / "voice_orphan").mkdir()
    VoiceStore(tmp_path).close()
    assert not (tmp_path / "voices" / "voice_orphan").exists()
