from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from voxserve.storage.keys import KeyLimits, KeyStore


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path)


def test_a_created_key_verifies_and_only_its_hash_is_stored(store: KeyStore, tmp_path: Path) -> None:
    key, secret = store.create("alice", ("speech", "voices"), KeyLimits(requests_per_minute=5))
    assert store.verify(secret) == key
    assert key.scopes == ("speech", "voices")
    assert key.limits.requests_per_minute == 5
    store.close()
    assert secret.encode() not in (tmp_path / "voxserve.sqlite3").read_bytes()


def test_a_wrong_or_malformed_secret_does_not_verify(store: KeyStore) -> None:
    key, secret = store.create("alice", ("speech",))
    for wrong in (secret[:-1] + ("a" if secret[-1] != "a" else "b"), f"vx-{key.id}", "", "vx--", "Bearer x", "x" * 500):
        assert store.verify(wrong) is None


def test_secrets_with_dashes_in_their_random_part_verify(store: KeyStore) -> None:
    """token_urlsafe may put '-' in the secret; only the first two separate prefix and id."""
    secrets = [store.create(f"k{n}", ("speech",))[1] for n in range(40)]
    assert any(secret.count("-") > 2 for secret in secrets)
    assert all(store.verify(secret) is not None for secret in secrets)


def test_keys_survive_a_restart_and_deletion_revokes(tmp_path: Path) -> None:
    first = KeyStore(tmp_path)
    key, secret = first.create("alice", ("admin",))
    first.close()
    second = KeyStore(tmp_path)
    assert second.verify(secret) == key
    assert second.any()
    assert second.delete("alice") == key
    assert second.verify(secret) is None
    assert not second.any()
    assert second.delete("alice") is None


def test_unknown_scopes_and_taken_names_are_refused(store: KeyStore) -> None:
    with pytest.raises(ValueError, match="scopes"):
        store.create("bob", ("root",))
    with pytest.raises(ValueError, match="scopes"):
        store.create("bob", ())
    store.create("bob", ("speech",))
    with pytest.raises(sqlite3.IntegrityError):
        store.create("bob", ("speech",))


def test_limits_beyond_what_sqlite_holds_are_refused(store: KeyStore) -> None:
    with pytest.raises(ValueError, match="limits"):
        store.create("huge", ("speech",), KeyLimits(requests_per_minute=2**70))
    assert store.find("huge") is None
