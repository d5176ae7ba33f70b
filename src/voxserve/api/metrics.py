"""`GET /metrics`: Prometheus text exposition."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Response

from voxserve.api.access import metrics_access
from voxserve.api.state import get_telemetry
from voxserve.obs.telemetry import Telemetry


def router_for(auth: Literal["remote", "always", "never"]) -> APIRouter:
    """The `/metrics` route, behind `metrics_auth`'s rule."""
    router = APIRouter(dependencies=[Depends(metrics_access(auth))])
    router.add_api_route("/metrics", metrics, methods=["GET"], response_model=None)
    return router


async def metrics(telemetry: Telemetry = Depends(get_telemetry)) -> Response:
    body, content_type = telemetry.metrics.render()
    return Response(body, media_type=content_type)
