"""`/v1/audio/voices`: the built-in voices, and custom voices registered from a reference recording.

A custom voice belongs to the key that made it: other keys neither see nor use it, unless an admin shares it."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request

from voxserve.api.access import metered, require
from voxserve.api.forms import read_body
from voxserve.api.protocol import VoiceCreateRequest, VoiceUpdateRequest
from voxserve.api.state import get_conversion, get_speech, get_trace
from voxserve.api.streaming import unless_disconnected
from voxserve.obs.trace import RequestTrace
from voxserve.service.access import Principal
from voxserve.service.conversion import ConversionService
from voxserve.service.limits import Lease
from voxserve.service.speech import SpeechService
from voxserve.storage.voices import CustomVoice

router = APIRouter()


@router.get("/v1/audio/voices")
async def list_voices(
    principal: Principal = Depends(require("speech")), speech: SpeechService = Depends(get_speech)
) -> dict[str, object]:
    builtin = [{"object": "voice", "type": "builtin", **asdict(voice)} for voice in speech.registry.voices()]
    custom = [_custom_voice(voice) for voice in speech.library.list(principal.caller)] if speech.library else []
    return {
        "object": "list",
        "data": builtin + custom,
        "default": speech.registry.default_voice.id,
        "aliases": speech.registry.aliases(),
    }


@router.post("/v1/audio/voices")
async def create_voice(
    request: Request,
    principal: Principal = Depends(require("voices")),
    _: Lease = Depends(metered("voices")),
    conversion: ConversionService = Depends(get_conversion),
    trace: RequestTrace = Depends(get_trace),
) -> dict[str, object]:
    body, uploads = await read_body(request, VoiceCreateRequest, conversion.max_upload_bytes)
    registration = body.to_registration(uploads.get("file"), principal.caller)
    voice = await unless_disconnected(request, conversion.register_voice(registration, trace))
    return _custom_voice(voice, conversion)


@router.get("/v1/audio/voices/{voice_id}")
async def get_voice(
    voice_id: str, principal: Principal = Depends(require("speech")),
    conversion: ConversionService = Depends(get_conversion),
) -> dict[str, object]:  # fmt: skip
    return _custom_voice(conversion.library.get(voice_id, principal.caller), conversion)


@router.patch("/v1/audio/voices/{voice_id}")
async def update_voice(
    voice_id: str, body: VoiceUpdateRequest, principal: Principal = Depends(require("admin")),
    conversion: ConversionService = Depends(get_conversion),
) -> dict[str, object]:  # fmt: skip
    return _custom_voice(conversion.library.share(voice_id, body.shared, principal.caller), conversion)


@router.delete("/v1/audio/voices/{voice_id}")
async def delete_voice(
    voice_id: str, principal: Principal = Depends(require("voices")),
    conversion: ConversionService = Depends(get_conversion),
) -> dict[str, object]:  # fmt: skip
    voice = conversion.library.delete(voice_id, principal.caller)
    return {"id": voice.id, "object": "voice.deleted", "deleted": True}


def _custom_voice(voice: CustomVoice, conversion: ConversionService | None = None) -> dict[str, object]:
    """A custom voice as the API shows it; with `conversion`, its analysed features too."""
    shown: dict[str, object] = {
        "object": "voice",
        "type": "custom",
        "id": voice.id,
        "name": voice.name,
        "engine": "custom",
        "base_voice": voice.base_voice,
        "created_at": int(voice.created_at),
        "reference_seconds": round(voice.reference_s, 3),
        "sample_rate": voice.sample_rate,
        "shared": voice.shared,
    }
    if conversion is not None:
        shown["features"] = conversion.library.features(voice).summary()
    return shown
