"""`GET /v1/models` and `GET /v1/audio/voices`: what a client may ask for."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends

from voxserve.api.state import get_speech
from voxserve.service.speech import SpeechService

router = APIRouter()


@router.get("/v1/models")
async def list_models(speech: SpeechService = Depends(get_speech)) -> dict[str, object]:
    models = [
        {"id": name, "object": "model", "created": 0, "owned_by": "voxserve"} for name in speech.registry.models()
    ]
    return {"object": "list", "data": models}


@router.get("/v1/audio/voices")
async def list_voices(speech: SpeechService = Depends(get_speech)) -> dict[str, object]:
    voices = [{"object": "voice", **asdict(voice)} for voice in speech.registry.voices()]
    return {
        "object": "list",
        "data": voices,
        "default": speech.registry.default_voice.id,
        "aliases": speech.registry.aliases(),
    }
