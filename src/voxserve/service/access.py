"""`AccessControl`: who a request's API key is, and whether its scopes allow what it asks.

A server without keys (none in the store, none in settings) is open: every request acts with every scope.
Once one key exists, every route but `/health` and `/ready` needs one."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from voxserve.errors import AuthenticationError, PermissionDeniedError
from voxserve.storage.keys import SCOPES, KeyLimits, KeyStore, hash_key
from voxserve.types import Caller

BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class Principal:
    """The key a request came with (`key_id` `None`: the server has no keys), its scopes and limits."""

    key_id: str | None
    name: str
    scopes: frozenset[str]
    limits: KeyLimits = KeyLimits()

    @property
    def caller(self) -> Caller:
        return Caller(self.key_id, "admin" in self.scopes)


OPEN = Principal(None, "anonymous", frozenset(SCOPES))


class AccessControl:
    def __init__(self, store: KeyStore, bootstrap_keys: tuple[str, ...] = ()) -> None:
        self.store = store
        # Settings keys are held as hashes too, so a memory dump or a log of this object shows no key.
        self._bootstrap = {hash_key(secret): _bootstrap_principal(secret) for secret in bootstrap_keys}

    @property
    def required(self) -> bool:
        """Whether requests need a key: true once any key exists."""
        return bool(self._bootstrap) or self.store.any()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <key>` header. Raises `AuthenticationError` for a
        missing or unknown key where keys are required."""
        if not self.required:
            return OPEN
        if not authorization or not authorization.lower().startswith(BEARER):
            raise AuthenticationError("this server needs an API key: send 'Authorization: Bearer <key>'")
        secret = authorization[len(BEARER) :].strip()
        principal = self._bootstrap_match(secret)
        if principal is None:
            key = self.store.verify(secret)
            principal = key and Principal(key.id, key.name, frozenset(key.scopes), key.limits)
        if principal is None:
            raise AuthenticationError("the API key is not valid")
        return principal

    @staticmethod
    def authorize(principal: Principal, scope: str) -> None:
        if scope not in principal.scopes:
            raise PermissionDeniedError(f"the API key {principal.name!r} lacks the {scope!r} scope")

    def _bootstrap_match(self, secret: str) -> Principal | None:
        digest = hash_key(secret)
        # Compare against every settings key, in constant time each, so timing does not say which prefix matched.
        matches = [principal for known, principal in self._bootstrap.items() if hmac.compare_digest(known, digest)]
        return matches[0] if matches else None


def _bootstrap_principal(secret: str) -> Principal:
    fingerprint = hashlib.sha256(b"voxserve-settings-key:" + secret.encode()).hexdigest()[:12]
    return Principal(f"settings-{fingerprint}", f"settings-{fingerprint}", frozenset(SCOPES))
