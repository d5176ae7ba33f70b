"""`/v1/keys` (admin scope): create, list and revoke API keys. A new key's secret is in the create response
only; the server keeps its hash."""

from __future__ import annotations

import sqlite3
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from voxserve.api.access import require
from voxserve.api.state import get_access
from voxserve.errors import ConflictError, NotFoundError
from voxserve.service.access import AccessControl
from voxserve.storage.keys import MAX_LIMIT, ApiKey, KeyLimits

router = APIRouter(prefix="/v1/keys", dependencies=[Depends(require("admin"))])
Scope = Literal["speech", "voices", "admin"]


class KeyCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    requests_per_minute: int | None = Field(None, ge=0, le=MAX_LIMIT)
    max_streams: int | None = Field(None, ge=0, le=MAX_LIMIT)
    chars_per_day: int | None = Field(None, ge=0, le=MAX_LIMIT)


@router.post("")
async def create_key(body: KeyCreateRequest, access: AccessControl = Depends(get_access)) -> dict[str, object]:
    limits = KeyLimits(body.requests_per_minute, body.max_streams, body.chars_per_day)
    try:
        key, secret = access.store.create(body.name, tuple(body.scopes), limits)
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"a key named {body.name!r} exists", param="name", code="key_exists") from exc
    return {**_shown_key(key), "key": secret}


@router.get("")
async def list_keys(access: AccessControl = Depends(get_access)) -> dict[str, object]:
    return {"object": "list", "data": [_shown_key(key) for key in access.store.list()]}


@router.delete("/{key_id}")
async def delete_key(key_id: str, access: AccessControl = Depends(get_access)) -> dict[str, object]:
    key = access.store.delete(key_id)
    if key is None:
        raise NotFoundError(f"no API key {key_id!r}", param="key_id", code="key_not_found")
    return {"id": key.id, "object": "api_key.deleted", "deleted": True}


def _shown_key(key: ApiKey) -> dict[str, object]:
    return {
        "object": "api_key", "id": key.id, "name": key.name, "scopes": list(key.scopes),
        "created_at": int(key.created_at), "requests_per_minute": key.limits.requests_per_minute,
        "max_streams": key.limits.max_streams, "chars_per_day": key.limits.chars_per_day,
    }  # fmt: skip
