"""`GET /v1/models`: the model names a client may ask for."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from voxserve.api.access import require
from voxserve.api.state import get_speech
from voxserve.service.speech import SpeechService

router = APIRouter(dependencies=[Depends(require("speech"))])


@router.get("/v1/models")
async def list_models(speech: SpeechService = Depends(get_speech)) -> dict[str, object]:
    models = [
        {"id": name, "object": "model", "created": 0, "owned_by": "voxserve"} for name in speech.registry.models()
    ]
    return {"object": "list", "data": models}
