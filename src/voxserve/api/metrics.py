"""`GET /metrics`: Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from voxserve.api.state import AppState, get_state
from voxserve.errors import NotReadyError

router = APIRouter()


@router.get("/metrics", response_model=None)
async def metrics(state: AppState = Depends(get_state)) -> Response:
    if state.speech is None:
        raise NotReadyError("voices are still loading; retry shortly")
    body, content_type = state.speech.metrics.render()
    return Response(body, media_type=content_type)
