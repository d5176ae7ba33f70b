"""`ConversionService`: a source recording, converted toward a target voice, streamed out as it converts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import soxr

from voxserve.audio.decode import decode_audio
from voxserve.audio.encode import CONTENT_TYPES
from voxserve.conversion.base import ConversionOptions, ConversionPlan, Converter
from voxserve.conversion.features import VoiceFeatures, extract_voice_features
from voxserve.conversion.windows import WindowedConversion
from voxserve.conversion.world import analysis_rate
from voxserve.errors import InvalidRequestError
from voxserve.net.fetch import UrlFetcher
from voxserve.obs.trace import RequestTrace
from voxserve.service.encoding import encode_chunks, whole_body
from voxserve.service.voice_library import VoiceLibrary
from voxserve.settings import Settings
from voxserve.storage.voices import CustomVoice
from voxserve.types import AudioChunk, Caller

# The source's own voice is measured on its first stretch, so a long source starts streaming quickly.
SOURCE_PROFILE_S = 15.0
MIN_SOURCE_S = 0.5


@dataclass(frozen=True, slots=True)
class Upload:
    data: bytes
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class ConversionJob:
    """A validated conversion request: one source (`source` or `source_url`), one target (`voice`, `target` or
    `target_url`)."""

    source: Upload | None = None
    source_url: str | None = None
    voice: str | None = None
    target: Upload | None = None
    target_url: str | None = None
    response_format: str = "mp3"
    pitch_shift: float = 0.0
    formant_shift: float = 1.0
    caller: Caller = Caller()


@dataclass(frozen=True, slots=True)
class VoiceRegistration:
    """A custom voice to make: its name, one reference recording (`upload` or `url`), and who owns it."""

    name: str
    upload: Upload | None = None
    url: str | None = None
    base_voice: str | None = None
    owner: Caller = Caller()
    shared: bool = False


class ConversionStream:
    """One conversion's audio, converted window by window as the body is read."""

    def __init__(
        self, source: AudioChunk, plan: ConversionPlan, response_format: str, trace: RequestTrace, settings: Settings
    ) -> None:
        self.trace = trace
        self.response_format = response_format
        self.sample_rate = source.sample_rate
        self._source = source
        self._plan = plan
        self._settings = settings

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.response_format]

    async def audio(self) -> AsyncIterator[AudioChunk]:
        windows = WindowedConversion(self._plan, self.sample_rate, overlap_s=self._settings.conversion_overlap_s)
        step = round(self._settings.conversion_window_s * self.sample_rate)
        samples = self._source.samples
        for start in range(0, len(samples), step):
            converted = await self.trace.in_thread("convert", windows.push, samples[start : start + step])
            if len(converted):
                yield self._chunk(converted)
        yield self._chunk(await self.trace.in_thread("convert", windows.flush))

    def encoded(self) -> AsyncIterator[bytes]:
        return encode_chunks(self.audio(), self.response_format, self.sample_rate, self.trace)

    async def body(self) -> bytes:
        return await whole_body(self.response_format, self.encoded())

    def _chunk(self, samples: np.ndarray) -> AudioChunk:
        self.trace.audio_s += len(samples) / self.sample_rate
        return AudioChunk(samples, self.sample_rate)


class ConversionService:
    def __init__(self, library: VoiceLibrary, converter: Converter, fetcher: UrlFetcher, settings: Settings) -> None:
        self.library = library
        self.converter = converter
        self.fetcher = fetcher
        self.max_upload_bytes = settings.max_upload_bytes
        self._settings = settings

    async def open(self, job: ConversionJob, trace: RequestTrace) -> ConversionStream:
        """Fetch (in parallel), decode and analyse what the job names; the conversion itself runs as the
        stream is read. Raises a `VoxError` for any input a client got wrong."""
        _check_one_of(job.source, job.source_url, names=("file", "source_url"))
        _check_one_of(job.voice, job.target, job.target_url, names=("voice", "target", "target_url"))
        trace.response_format = job.response_format
        with trace.stage("fetch"):
            source, target = await asyncio.gather(
                self._upload(job.source, job.source_url, "source_url"),
                self._upload(job.target, job.target_url, "target_url"),
            )
        assert source is not None
        audio = await trace.in_thread("decode", self._decode_source, source)
        plan = await trace.in_thread("analyze", self._plan, audio, job, target)
        trace.voice = job.voice or "recording"
        trace.engine = self.converter.name
        return ConversionStream(audio, plan, job.response_format, trace, self._settings)

    async def register_voice(self, registration: VoiceRegistration, trace: RequestTrace) -> CustomVoice:
        """Fetch or take the reference recording, decode and analyse it, and persist the voice."""
        _check_one_of(registration.upload, registration.url, names=("file", "url"))
        with trace.stage("fetch"):
            reference = await self._upload(registration.upload, registration.url, "url")
        assert reference is not None
        max_s = self._settings.reference_max_s
        audio = await trace.in_thread("decode", decode_audio, reference.data, reference.content_type, max_seconds=max_s)
        return await trace.in_thread(
            "analyze", self.library.register, registration.name, audio, registration.base_voice,
            owner=registration.owner, shared=registration.shared,
        )  # fmt: skip

    async def _upload(self, upload: Upload | None, url: str | None, param: str) -> Upload | None:
        if url is None:
            return upload
        return Upload(await self.fetcher.fetch(url, param))

    def _decode_source(self, source: Upload) -> AudioChunk:
        audio = decode_audio(source.data, source.content_type, param="file", max_seconds=self._settings.max_source_s)
        if audio.duration_s < MIN_SOURCE_S:
            raise InvalidRequestError(
                f"file: the source is {audio.duration_s:.2f} s; at least {MIN_SOURCE_S:g} s is needed",
                param="file",
                code="audio_too_short",
            )
        rate = analysis_rate(audio.sample_rate)
        if rate == audio.sample_rate:
            return audio
        return AudioChunk(soxr.resample(audio.samples, audio.sample_rate, rate).astype(np.float32), rate)

    def _plan(self, source: AudioChunk, job: ConversionJob, target: Upload | None) -> ConversionPlan:
        profile = AudioChunk(source.samples[: round(SOURCE_PROFILE_S * source.sample_rate)], source.sample_rate)
        source_features = extract_voice_features(profile)
        options = ConversionOptions(pitch_shift=job.pitch_shift, formant_shift=job.formant_shift)
        return self.converter.plan(source_features, self._target_features(job, target), options)

    def _target_features(self, job: ConversionJob, target: Upload | None) -> VoiceFeatures:
        if job.voice is not None:
            return self.library.target_features(job.voice, job.caller)
        assert target is not None
        recording = decode_audio(
            target.data, target.content_type, param="target", max_seconds=self._settings.reference_max_s
        )
        return self.library.recording_features(recording)

    async def close(self) -> None:
        await self.fetcher.aclose()


def _check_one_of(*values: object, names: tuple[str, ...]) -> None:
    given = [name for name, value in zip(names, values, strict=True) if value is not None]
    if len(given) != 1:
        problem = "none was given" if not given else f"got {', '.join(given)}"
        raise InvalidRequestError(f"give exactly one of {', '.join(names)} ({problem})", param=names[0])
