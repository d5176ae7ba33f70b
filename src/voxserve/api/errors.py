"""The one place errors become responses: `{"error": {"message", "type", "param", "code"}}` with the status and
headers the error carries. Internal failures (500) show the client a fixed message and the request id; what
went wrong goes to the log under that id."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from voxserve.api.state import get_trace
from voxserve.errors import InvalidRequestError, NotFoundError, VoxError

logger = logging.getLogger(__name__)
# Where pydantic says a problem was found; the field's own name is what a client needs.
LOCATIONS = ("body", "query", "path", "header")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(VoxError, _render_vox_error)
    app.add_exception_handler(RequestValidationError, _render_validation_error)
    app.add_exception_handler(HTTPException, _render_http_error)
    app.add_exception_handler(Exception, _render_unexpected_error)


def error_response(error: VoxError, request_id: str) -> JSONResponse:
    """`error` as the client sees it. Safe to call outside FastAPI's handlers (middleware)."""
    headers = {**error.headers(), "X-Request-Id": request_id}
    return JSONResponse(shown_error(error, request_id), status_code=error.status_code, headers=headers)


def shown_error(error: VoxError, request_id: str) -> dict[str, object]:
    """The OpenAI error object a client sees for `error`: a server failure only as a fixed message with the
    request id (what went wrong is logged under it)."""
    if error.status_code == 500:
        logger.error("request %s failed: %s (%s)", request_id, error.message, type(error).__name__)
        return VoxError(f"the server failed on this request; quote request id {request_id}", code=error.code).to_dict()
    return error.to_dict()


async def _render_vox_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VoxError)
    return error_response(exc, get_trace(request).request_id)


async def _render_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await _render_vox_error(request, _as_invalid_request(exc))


def _as_invalid_request(exc: RequestValidationError) -> InvalidRequestError:
    """The first problem pydantic found, in a client's words: which field, and what is wrong with it."""
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ())]
    if location and location[0] in LOCATIONS:
        location = location[1:]
    kind = error.get("type", "")
    if kind == "json_invalid":
        return InvalidRequestError("the request body is not valid JSON", code="invalid_json")
    if not location:
        return InvalidRequestError("the request body must be a JSON object", code="invalid_body")
    param = location[0] if kind != "missing" or len(location) == 1 else ".".join(location)
    code = "missing_required_parameter" if kind == "missing" else "invalid_value"
    return InvalidRequestError(f"{'.'.join(location)}: {error.get('msg', 'invalid value')}", param=param, code=code)


async def _render_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error_class = NotFoundError if exc.status_code == 404 else InvalidRequestError
    error = error_class(str(exc.detail))
    error.status_code = exc.status_code
    return await _render_vox_error(request, error)


async def _render_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = get_trace(request).request_id
    logger.exception("request %s: unhandled error on %s %s", request_id, request.method, request.url.path, exc_info=exc)
    return error_response(VoxError("internal server error"), request_id)
