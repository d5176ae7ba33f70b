"""Request and response bodies of the OpenAI-compatible API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from voxserve.service.speech import SpeechJob

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class VoiceRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)


class SpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech` body, plus `stream` (voxserve: `false` buffers the whole body)."""

    model_config = ConfigDict(extra="ignore")

    model: str = "tts-1"
    input: str = Field(min_length=1)
    voice: str | VoiceRef
    response_format: ResponseFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=4096)
    stream_format: Literal["audio", "sse"] = "audio"
    stream: bool = True

    def to_job(self, *, use_cache: bool = True) -> SpeechJob:
        return SpeechJob(
            text=self.input,
            voice=self.voice if isinstance(self.voice, str) else self.voice.id,
            model=self.model,
            speed=self.speed,
            response_format=self.response_format,
            instructions=self.instructions,
            use_cache=use_cache,
        )
