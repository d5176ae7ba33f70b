"""`GET /metrics`: Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from voxserve.api.state import get_telemetry
from voxserve.obs.telemetry import Telemetry

router = APIRouter()


@router.get("/metrics", response_model=None)
async def metrics(telemetry: Telemetry = Depends(get_telemetry)) -> Response:
    body, content_type = telemetry.metrics.render()
    return Response(body, media_type=content_type)
