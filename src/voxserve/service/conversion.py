"""`ConversionService`: a source recording, converted toward a target voice, streamed out as it converts.

Conversions and voice registrations are admitted like speech: each takes one of the pool's slots (429 with
Retry-After when none is free), runs its analysis and conversion on the pool's own threads (never on the default
executor speech uses), and stops at the request's deadline (504) or when its client leaves."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import soxr

from voxserve.audio.decode import decode_audio
from voxserve.audio.loudness import PeakLimiter, db_to_gain
from voxserve.conversion.base import ConversionOptions, ConversionPlan, Converter
from voxserve.conversion.cancellation import Cancellation
from voxserve.conversion.features import VoiceFeatures, extract_voice_features
from voxserve.conversion.pool import ConversionPool, Slot
from voxserve.conversion.windows import WindowedConversion
from voxserve.conversion.world import analysis_rate
from voxserve.errors import DeadlineExceededError, InvalidRequestError
from voxserve.net.fetch import UrlFetcher
from voxserve.obs.trace import RequestTrace
from voxserve.service.response import AudioResponse
from voxserve.service.voice_library import VoiceLibrary
from voxserve.storage.voices import CustomVoice
from voxserve.types import AudioChunk, Caller

T = TypeVar("T")
# The source's own voice is measured on its first stretch, so a long source starts streaming quickly.
SOURCE_PROFILE_S = 15.0
MIN_SOURCE_S = 0.5


@dataclass(frozen=True, slots=True)
class ConversionServiceOptions:
    """What the conversion service is configured with (the composition root fills it from `Settings`)."""

    request_timeout_s: float
    max_upload_bytes: int
    max_source_s: float
    reference_max_s: float
    overlap_s: float  # between conversion windows
    window_s: float
    peak_ceiling_dbfs: float = -1.0  # the converted audio is limited below it


@dataclass(frozen=True, slots=True)
class Upload:
    data: bytes
    content_type: str = ""
    filename: str = ""


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


class _AdmittedWork:
    """One admitted conversion or registration: its slot in the pool, when it must stop, and its trace. Its
    steps run through `run` (on the pool's threads) and `within` (awaited I/O), both bounded by the deadline."""

    def __init__(self, pool: ConversionPool, slot: Slot, cancellation: Cancellation, trace: RequestTrace) -> None:
        self.cancellation = cancellation
        self.trace = trace
        self._pool = pool
        self._slot = slot

    async def run(self, stage: str, work: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """`work(*args, **kwargs)` on the pool, timed as `stage`."""
        with self.trace.stage(stage):
            return await self._pool.run(self.cancellation, work, *args, **kwargs)

    async def within(self, pending: Awaitable[T]) -> T:
        """`pending` awaited until the deadline (then `DeadlineExceededError`, and `pending` is cancelled)."""
        try:
            return await asyncio.wait_for(pending, timeout=max(self.cancellation.remaining_s(), 0.0))
        except TimeoutError:
            if self.cancellation.remaining_s() > 0:
                raise  # the awaited work's own timeout, not the request's
            self.cancellation.cancel(DeadlineExceededError, "the request passed its deadline")
            raise DeadlineExceededError("the request passed its deadline") from None
        except asyncio.CancelledError:
            self.cancellation.cancel()
            raise

    def finish(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        self._slot.release()


class _ConversionAudio:
    """One conversion's audio, converted window by window as it is read. The conversion holds its slot in the
    pool until the audio ends or the reader leaves; each window is a step its deadline can stop."""

    def __init__(
        self, source: AudioChunk, plan: ConversionPlan, work: _AdmittedWork, options: ConversionServiceOptions
    ) -> None:
        self._source = source
        self._plan = plan
        self._work = work
        self._options = options
        # Audio dropped unread (its request failed before the body started) still gives its slot back.
        weakref.finalize(self, work.finish)

    async def chunks(self) -> AsyncGenerator[AudioChunk, None]:
        rate = self._source.sample_rate
        try:
            windows = WindowedConversion(self._plan, rate, overlap_s=self._options.overlap_s)
            limiter = PeakLimiter(rate, db_to_gain(self._options.peak_ceiling_dbfs))
            step = round(self._options.window_s * rate)
            samples = self._source.samples
            for start in range(0, len(samples), step):
                converted = await self._work.run("convert", windows.push, samples[start : start + step])
                if len(converted := limiter.push(converted)):
                    yield AudioChunk(converted, rate)
            tail = limiter.push(await self._work.run("convert", windows.flush))
            yield AudioChunk(np.concatenate([tail, limiter.flush()]), rate)
        finally:
            self._work.finish()


class ConversionService:
    """Conversions and voice registrations. Both are admitted into `pool` (by default one thread and two in
    progress at once) and bounded by `request_timeout_s` from when the request arrived."""

    def __init__(
        self, library: VoiceLibrary, converter: Converter, fetcher: UrlFetcher, options: ConversionServiceOptions, *,
        pool: ConversionPool | None = None,
    ) -> None:  # fmt: skip
        self.library = library
        self.converter = converter
        self.fetcher = fetcher
        self.pool = pool or ConversionPool()
        self.max_upload_bytes = options.max_upload_bytes
        self._options = options

    async def open(self, job: ConversionJob, trace: RequestTrace) -> AudioResponse:
        """Fetch (in parallel), decode and analyse what the job names; the conversion itself runs as the
        stream is read. Raises a `VoxError` for any input a client got wrong, `QueueFullError` when the server
        runs as many conversions as it may, `DeadlineExceededError` past the request's deadline."""
        _check_one_of(job.source, job.source_url, names=("file", "source_url"))
        _check_one_of(job.voice, job.target, job.target_url, names=("voice", "target", "target_url"))
        trace.response_format = job.response_format
        work = self._admit(trace)
        try:
            with trace.stage("fetch"):
                source, target = await work.within(
                    asyncio.gather(
                        self._upload(job.source, job.source_url, "source_url"),
                        self._upload(job.target, job.target_url, "target_url"),
                    )
                )
            assert source is not None
            audio = await work.run("decode", self._decode_source, source)
            plan = await work.run("analyze", self._plan, audio, job, target, work.cancellation)
        except BaseException:
            work.finish()
            raise
        trace.voice = job.voice or "recording"
        trace.engine = self.converter.name
        converted = _ConversionAudio(audio, plan, work, self._options)
        return AudioResponse(converted.chunks, job.response_format, audio.sample_rate, trace)

    async def register_voice(self, registration: VoiceRegistration, trace: RequestTrace) -> CustomVoice:
        """Fetch or take the reference recording, decode and analyse it, and persist the voice. Admitted and
        bounded like a conversion: past the deadline nothing is stored (504), and a voice stored just before it
        is returned, never reported as failed."""
        _check_one_of(registration.upload, registration.url, names=("file", "url"))
        work = self._admit(trace)
        try:
            with trace.stage("fetch"):
                reference = await work.within(self._upload(registration.upload, registration.url, "url"))
            assert reference is not None
            audio = await work.run(
                "decode", decode_audio, reference.data, reference.content_type,
                max_seconds=self._options.reference_max_s,
            )  # fmt: skip
            return await work.run(
                "analyze", self.library.register, registration.name, audio, registration.base_voice,
                owner=registration.owner, shared=registration.shared, cancellation=work.cancellation,
            )  # fmt: skip
        finally:
            work.finish()

    def _admit(self, trace: RequestTrace) -> _AdmittedWork:
        slot = self.pool.admit()
        cancellation = Cancellation(trace.started_at + self._options.request_timeout_s)
        return _AdmittedWork(self.pool, slot, cancellation, trace)

    async def _upload(self, upload: Upload | None, url: str | None, param: str) -> Upload | None:
        if url is None:
            return upload
        return Upload(await self.fetcher.fetch(url, param))

    def _decode_source(self, source: Upload) -> AudioChunk:
        audio = decode_audio(source.data, source.content_type, param="file", max_seconds=self._options.max_source_s)
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

    def _plan(
        self, source: AudioChunk, job: ConversionJob, target: Upload | None, cancellation: Cancellation
    ) -> ConversionPlan:
        profile = AudioChunk(source.samples[: round(SOURCE_PROFILE_S * source.sample_rate)], source.sample_rate)
        source_features = extract_voice_features(profile)
        cancellation.check()
        options = ConversionOptions(pitch_shift=job.pitch_shift, formant_shift=job.formant_shift)
        return self.converter.plan(source_features, self._target_features(job, target, cancellation), options)

    def _target_features(self, job: ConversionJob, target: Upload | None, cancellation: Cancellation) -> VoiceFeatures:
        if job.voice is not None:
            return self.library.target_features(job.voice, job.caller, cancellation)
        assert target is not None
        recording = decode_audio(
            target.data, target.content_type, param="target", max_seconds=self._options.reference_max_s
        )
        return self.library.recording_features(recording)

    async def close(self) -> None:
        self.pool.close()
        await self.fetcher.aclose()


def _check_one_of(*values: object, names: tuple[str, ...]) -> None:
    given = [name for name, value in zip(names, values, strict=True) if value is not None]
    if len(given) != 1:
        problem = "none was given" if not given else f"got {', '.join(given)}"
        raise InvalidRequestError(f"give exactly one of {', '.join(names)} ({problem})", param=names[0])
