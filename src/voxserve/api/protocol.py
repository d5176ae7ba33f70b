"""Request and response bodies of the OpenAI-compatible API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from voxserve.frontend.document import BatchItem
from voxserve.service.captions import CAPTION_MAX_CHARS
from voxserve.service.conversion import ConversionJob, Upload, VoiceRegistration
from voxserve.service.jobs import JobVoice
from voxserve.service.speech import SpeechJob
from voxserve.types import Caller

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
JobFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm", "m4b"]
JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
# Hard ceilings in the schema; the configured `max_input_chars` (413 past it) is checked by the service.
MAX_INPUT_CHARS = 100_000
MAX_INSTRUCTIONS_CHARS = 4096
MIN_LOUDNESS_LUFS, MAX_LOUDNESS_LUFS = -40.0, -6.0


def _loudness_in_range(value: float | str | None) -> float | str | None:
    if isinstance(value, float) and not MIN_LOUDNESS_LUFS <= value <= MAX_LOUDNESS_LUFS:
        raise ValueError(f"loudness must be between {MIN_LOUDNESS_LUFS} and {MAX_LOUDNESS_LUFS} LUFS, or 'off'")
    return value


# voxserve: a response's target loudness in LUFS, or "off" for the voice's own level (`None`: the server's).
Loudness = Annotated[float | Literal["off"] | None, AfterValidator(_loudness_in_range)]


class VoiceRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)


class SpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech` body, plus `stream` (voxserve: `false` buffers the whole body)."""

    model_config = ConfigDict(extra="ignore")

    model: str = "tts-1"
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    voice: str | VoiceRef
    response_format: ResponseFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=MAX_INSTRUCTIONS_CHARS)
    stream_format: Literal["audio", "sse"] = "audio"
    stream: bool = True
    timestamps: Literal["none", "word", "phoneme"] = "none"
    loudness: Loudness = None

    def to_job(self, caller: Caller, *, use_cache: bool = True, timed: bool = True) -> SpeechJob:
        """`timed`: the response can carry timestamps (SSE, or a buffered JSON body); plain audio cannot."""
        return SpeechJob(
            text=self.input,
            voice=self.voice if isinstance(self.voice, str) else self.voice.id,
            model=self.model,
            speed=self.speed,
            response_format=self.response_format,
            instructions=self.instructions,
            use_cache=use_cache,
            caller=caller,
            timestamps=self.timestamps if timed else "none",
            loudness=self.loudness,
        )


CaptionFormat = Literal["srt", "vtt", "json"]


class CaptionRequest(SpeechRequest):
    """`POST /v1/audio/captions`: a speech body, and how its captions are written."""

    caption_format: CaptionFormat = "vtt"
    caption_max_chars: int = Field(CAPTION_MAX_CHARS, ge=10, le=200)
    include_audio: bool = False


class VoiceCreateRequest(BaseModel):
    """`POST /v1/audio/voices`: `name` plus a reference recording as the `file` part, or `url` to fetch it from."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=64)
    url: str | None = Field(None, max_length=2048)
    base_voice: str | None = None
    shared: bool = False

    def to_registration(self, upload: Upload | None, owner: Caller) -> VoiceRegistration:
        return VoiceRegistration(self.name, upload, self.url, self.base_voice, owner=owner, shared=self.shared)


class VoiceUpdateRequest(BaseModel):
    """`PATCH /v1/audio/voices/{id}` (admin keys): share a voice with every key, or stop sharing it."""

    model_config = ConfigDict(extra="forbid")

    shared: bool


class ConversionRequest(BaseModel):
    """`POST /v1/audio/conversions` fields; the `file` and `target` recordings come as multipart files."""

    model_config = ConfigDict(extra="ignore")

    source_url: str | None = None
    voice: str | None = None
    target_url: str | None = None
    response_format: ResponseFormat = "mp3"
    pitch_shift: float = Field(0.0, ge=-24.0, le=24.0)
    formant_shift: float = Field(1.0, ge=0.5, le=2.0)
    stream: bool = True

    def to_job(self, uploads: dict[str, Upload], caller: Caller) -> ConversionJob:
        return ConversionJob(
            source=uploads.get("file"),
            source_url=self.source_url,
            voice=self.voice,
            target=uploads.get("target"),
            target_url=self.target_url,
            response_format=self.response_format,
            pitch_shift=self.pitch_shift,
            formant_shift=self.formant_shift,
            caller=caller,
        )


class JobItem(BaseModel):
    """One item of a batch job: its own file; the fields left out come from the job."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    input: str = Field(min_length=1)
    voice: str | None = None
    model: str | None = None
    response_format: JobFormat | None = None
    speed: float | None = Field(None, ge=0.25, le=4.0)

    def to_item(self) -> BatchItem:
        options = self.model_dump(exclude={"id", "input"}, exclude_none=True)
        return BatchItem(self.id, self.input, options)


class JobCreateRequest(BaseModel):
    """`POST /v1/audio/jobs`: `input` (a book or any long text), `items` (a batch), or a `file` part (text,
    Markdown, EPUB, or JSONL batch items) in a multipart body, with the same voice fields as speech."""

    model_config = ConfigDict(extra="ignore")

    input: str | None = Field(None, min_length=1)
    input_format: Literal["text", "markdown"] = "text"
    items: list[JobItem] | None = None
    voice: str | VoiceRef
    model: str = "tts-1"
    response_format: JobFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    title: str = Field("", max_length=256)
    chapter_pattern: str | None = Field(None, max_length=200)
    loudness: Loudness = None

    def job_voice(self) -> JobVoice:
        voice = self.voice if isinstance(self.voice, str) else self.voice.id
        return JobVoice(voice, self.model, self.response_format, self.speed, self.loudness)
