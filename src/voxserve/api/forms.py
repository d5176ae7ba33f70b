"""Request bodies that may be multipart forms (with files) or JSON, read within the upload byte limit."""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from voxserve.errors import InvalidRequestError, PayloadTooLargeError
from voxserve.service.conversion import Upload

M = TypeVar("M", bound=BaseModel)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_FILES = 4
MAX_FIELDS = 32


async def read_body(request: Request, model: type[M], max_bytes: int) -> tuple[M, dict[str, Upload]]:
    """The body's fields validated as `model` (errors render like any validation error) and its files."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise PayloadTooLargeError(f"the request body is {int(declared)} bytes; the upload limit is {max_bytes}")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:
        fields, uploads = await _read_form(request, max_bytes)
    elif content_type == "application/json":
        fields, uploads = await _read_json(request), {}
    else:
        raise InvalidRequestError(
            "send the body as multipart/form-data (with files) or application/json", code="unsupported_media_type"
        )
    try:
        return model.model_validate(fields), uploads
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


async def _read_form(request: Request, max_bytes: int) -> tuple[dict[str, object], dict[str, Upload]]:
    fields: dict[str, object] = {}
    uploads: dict[str, Upload] = {}
    async with request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS) as form:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise PayloadTooLargeError(
                        f"{key}: the file is larger than the limit of {max_bytes} bytes", param=key
                    )
                uploads[key] = Upload(data, value.content_type or "", value.filename or "")
            else:
                fields[key] = value
    return fields, uploads


async def _read_json(request: Request) -> dict[str, object]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError("the request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object", code="invalid_body")
    return body
