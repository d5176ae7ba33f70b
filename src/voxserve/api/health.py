"""`GET /health` (the process answers) and `GET /ready` (voices loaded and warmed up)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from voxserve.api.state import AppState, get_state

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(state: AppState = Depends(get_state)) -> JSONResponse:
    if state.fatal is not None:
        return JSONResponse({"status": "failed"}, status_code=503)
    if not state.ready or state.services is None:
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "voices": len(state.services.speech.registry.voices())})
