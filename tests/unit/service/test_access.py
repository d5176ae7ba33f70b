from __future__ import annotations

from pathlib import Path

import pytest

from voxserve.errors import AuthenticationError, PermissionDeniedError
from voxserve.service.access import OPEN, AccessControl
from voxserve.storage.keys import KeyStore


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path)


def test_a_server_without_keys_is_open(store: KeyStore) -> None:
    access = AccessControl(store)
    assert not access.required
    assert access.authenticate(None) is OPEN
    assert access.authenticate("Bearer anything") is OPEN
    AccessControl.authorize(OPEN, "admin")


def test_once_a_key_exists_every_request_needs_one(store: KeyStore) -> None:
    access = AccessControl(store)
    key, secret = store.create("alice", ("speech",))
    assert access.required
    for header in (None, "", "Basic abc", "Bearer", f"Bearer {secret}x"):
        with pytest.raises(AuthenticationError):
            access.authenticate(header)
    principal = access.authenticate(f"bearer {secret}")
    assert principal.key_id == key.id
    assert principal.caller.key_id == key.id
    assert not principal.caller.admin
    AccessControl.authorize(principal, "speech")
    with pytest.raises(PermissionDeniedError, match="admin"):
        AccessControl.authorize(principal, "admin")


def test_settings_keys_have_every_scope_and_a_stable_identity(store: KeyStore) -> None:
    access = AccessControl(store, ("container-key",))
    assert access.required
    principal = access.authenticate("Bearer container-key")
    assert principal.scopes == {"speech", "voices", "admin"}
    assert principal.key_id == AccessControl(store, ("container-key",)).authenticate("Bearer container-key").key_id
    assert "container-key" not in repr(access.__dict__)
    assert "container-key" not in principal.key_id
    with pytest.raises(AuthenticationError):
        access.authenticate("Bearer other")
