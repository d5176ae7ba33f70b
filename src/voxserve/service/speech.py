"""`SpeechService`: a speech request becomes a lazy stream of audio chunks, then of encoded bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np

from voxserve import __version__
from voxserve.audio.dsp import SegmentJoiner
from voxserve.audio.encode import CONTENT_TYPES
from voxserve.cache.audio import AudioCache, CachedAudio, audio_cache_key
from voxserve.conversion.base import ConversionOptions, ConversionPlan, Converter
from voxserve.conversion.windows import WindowedConversion
from voxserve.conversion.world_converter import WorldConverter
from voxserve.engines.base import Engine
from voxserve.errors import DeadlineExceededError, InputTooLongError, InvalidRequestError, VoiceNotFoundError
from voxserve.frontend.normalize import normalize_text
from voxserve.frontend.segment import segment_text
from voxserve.obs.metrics import Metrics
from voxserve.obs.telemetry import Telemetry, TelemetryOptions
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.pool import Priority, Reservation, Scheduler
from voxserve.service.encoding import encode_chunks, whole_body
from voxserve.service.voice_library import VoiceLibrary
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import Settings
from voxserve.storage.voices import CustomVoice
from voxserve.types import AudioChunk, Caller, SynthesisParams, VoiceInfo


@dataclass(frozen=True, slots=True)
class SpeechJob:
    """A validated speech request, in the service's terms."""

    text: str
    voice: str
    model: str = "tts-1"
    speed: float = 1.0
    response_format: str = "mp3"
    instructions: str | None = None
    use_cache: bool = True
    caller: Caller = Caller()


@dataclass(frozen=True, slots=True)
class CustomVoiceSpeech:
    """A custom voice: its base voice speaks, then the audio is converted toward it as it streams."""

    voice: CustomVoice
    plan: Callable[[], ConversionPlan]
    overlap_s: float


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a stream needs from its service."""

    scheduler: Scheduler
    metrics: Metrics
    crossfade_ms: float
    deadline: float
    store: Callable[[CachedAudio], None] | None


class SpeechStream:
    """One request's audio. Lazy: nothing is synthesized until `audio()`, `encoded()` or `body()` is iterated.

    Segments are queued on the scheduler together and synthesize in parallel across workers; they come back in
    order, joined with a short crossfade. Leaving the iteration early (a client that disconnects) cancels the
    segments still queued. A stream made from a cache entry replays its bytes without touching an engine.
    """

    def __init__(
        self, job: SpeechJob, voice: VoiceInfo, engine: Engine, trace: RequestTrace, *,
        segments: Sequence[SynthesisParams] = (), plan: _Plan | None = None, cached: CachedAudio | None = None,
        custom: CustomVoiceSpeech | None = None,
    ) -> None:  # fmt: skip
        self.trace = trace
        self.voice = voice
        self.voice_id = custom.voice.id if custom else voice.id
        self.response_format = job.response_format
        self.cache_status = "hit" if cached else ("miss" if plan and plan.store else "bypass")
        self.instructions_ignored = bool(job.instructions) and not engine.supports_instructions
        self._engine = engine
        self._segments = segments
        self._plan = plan
        self._cached = cached
        self._custom = custom
        self._tenant = job.caller.tenant

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.response_format]

    async def audio(self) -> AsyncGenerator[AudioChunk, None]:
        """The joined audio, chunk by chunk, as segments finish in order. Lazy: the request is admitted when
        iteration starts (`QueueFullError` then). However the iteration ends (done, failed, closed early, or
        cancelled while segments are still being submitted), every segment it queued is cancelled."""
        assert self._plan is not None, "a cached stream has no audio to decode; use encoded()"
        with self._plan.scheduler.admit(len(self._segments)) as reservation:
            # The first segment is queued on its own, so a worker starts on it while the rest are phonemized.
            futures = await asyncio.to_thread(self._submit, reservation, 0, 1)
            futures += await asyncio.to_thread(self._submit, reservation, 1, len(self._segments))
            windows = await self._open_conversion()
            joiner = SegmentJoiner(round(self._plan.crossfade_ms * self.voice.sample_rate / 1000))
            for future in futures:
                ready = await self._join(await self._result(future), joiner, windows)
                if len(ready):
                    yield self._chunk(ready)
            yield self._chunk(await self._flush(joiner, windows))

    async def encoded(self) -> AsyncIterator[bytes]:
        """The response body, piece by piece, through this response's one encoder."""
        if self._cached is not None:
            self.trace.audio_s = self._cached.audio_s
            self.trace.mark_first_audio()
            self.trace.finish()
            yield self._cached.body
            return
        pieces: list[bytes] = []
        body = encode_chunks(self.audio(), self.response_format, self.voice.sample_rate, self.trace)
        async with aclosing(body):
            async for data in body:
                pieces.append(data)
                yield data
        self._store(b"".join(pieces))

    async def body(self) -> bytes:
        """The whole response body at once, for clients that asked not to stream."""
        return await whole_body(self.response_format, self.encoded())

    def _submit(self, reservation: Reservation, start: int, stop: int) -> list[Future[np.ndarray]]:
        """Phonemize and queue segments `start` to `stop - 1`. Runs in a thread that outlives a cancelled
        request, so it stops as soon as the request has ended (closing the reservation cancels what it queued)."""
        assert self._plan is not None
        futures = []
        for index in range(start, stop):
            if reservation.closed:
                break
            params = self._segments[index]
            with self.trace.stage("phonemize", segment=index):
                prepared = self._engine.prepare(params)
            futures.append(
                self._plan.scheduler.submit(
                    self._engine, prepared, self.trace,
                    priority=Priority.FIRST_SEGMENT if index == 0 else Priority.LATER_SEGMENT,
                    due=self.trace.started_at + self._playback_offset_s(index),
                    deadline=self._plan.deadline, tenant=self._tenant, reservation=reservation,
                )
            )  # fmt: skip
        return futures

    def _playback_offset_s(self, index: int) -> float:
        """When, after the request started, a listener reaches segment `index` (estimated from text length)."""
        return sum(params.estimated_audio_s for params in self._segments[:index])

    async def _result(self, future: Future[np.ndarray]) -> np.ndarray:
        assert self._plan is not None
        remaining_s = self._plan.deadline - time.perf_counter()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(remaining_s, 0.0))
        except (TimeoutError, DeadlineExceededError) as exc:
            self._plan.metrics.timed_out_requests.inc()
            raise DeadlineExceededError(f"request {self.trace.request_id} passed its deadline") from exc

    async def _open_conversion(self) -> WindowedConversion | None:
        """For a custom voice, the conversion of the base voice's audio toward it (features from the cache)."""
        if self._custom is None:
            return None
        conversion = await self.trace.in_thread("analyze", self._custom.plan)
        return WindowedConversion(conversion, self.voice.sample_rate, overlap_s=self._custom.overlap_s)

    async def _join(self, samples: np.ndarray, joiner: SegmentJoiner, windows: WindowedConversion | None) -> np.ndarray:
        """One more segment through the crossfade (and the conversion): the audio that is final so far."""
        with self.trace.stage("postprocess"):
            ready = joiner.push(samples)
        if windows is None:
            return ready
        return await self.trace.in_thread("convert", windows.push, ready)

    async def _flush(self, joiner: SegmentJoiner, windows: WindowedConversion | None) -> np.ndarray:
        tail = joiner.flush()
        if windows is None:
            return tail
        pushed = await self.trace.in_thread("convert", windows.push, tail)
        return np.concatenate([pushed, await self.trace.in_thread("convert", windows.flush)])

    def _chunk(self, samples: np.ndarray) -> AudioChunk:
        self.trace.audio_s += len(samples) / self.voice.sample_rate
        return AudioChunk(samples, self.voice.sample_rate)

    def _store(self, body: bytes) -> None:
        if self._plan is not None and self._plan.store is not None:
            entry = CachedAudio(body, self.content_type, self.voice.id, self.voice.sample_rate, self.trace.audio_s)
            self._plan.store(entry)


class SpeechService:
    """Validates speech jobs and opens their streams; owns the voices, the scheduler and the audio cache."""

    def __init__(
        self, registry: VoiceRegistry, scheduler: Scheduler, settings: Settings, *,
        audio_cache: AudioCache | None = None, telemetry: Telemetry | None = None,
        library: VoiceLibrary | None = None, converter: Converter | None = None,
    ) -> None:  # fmt: skip
        self.registry = registry
        self.library = library
        self._converter = converter or WorldConverter(settings.conversion_envelope_strength)
        self.scheduler = scheduler
        self.audio_cache = audio_cache or AudioCache(0)
        self.telemetry = telemetry or Telemetry(TelemetryOptions(enabled=False))
        self._settings = settings

    @property
    def metrics(self) -> Metrics:
        return self.telemetry.metrics

    def open(self, job: SpeechJob, trace: RequestTrace | None = None) -> SpeechStream:
        """Check the job, answer it from the cache or plan its segments, recording into `trace` (the API
        starts it when the request arrives). Raises a `VoxError` for anything a client got wrong. Admission
        (`QueueFullError` when the server is at capacity) comes when the stream is first iterated, so a stream
        that is never iterated holds no queue room."""
        trace = trace or self.telemetry.new_trace()
        trace.input_chars = len(job.text)
        trace.response_format = job.response_format
        if not job.text.strip():
            raise InvalidRequestError("input must contain text", param="input")
        if len(job.text) > self._settings.max_input_chars:
            raise InputTooLongError(
                f"input is {len(job.text)} characters; the limit is {self._settings.max_input_chars}", param="input"
            )
        voice, custom = self._resolve(job)
        trace.engine, trace.voice = voice.engine, custom.voice.id if custom else voice.id
        key = self._cache_key(job, voice, custom) if job.use_cache and self.audio_cache.enabled else None
        if key is not None:
            with trace.stage("cache"):
                cached = self.audio_cache.get(key)
            if cached is not None:
                return SpeechStream(job, voice, self.registry.engine(voice), trace, cached=cached, custom=custom)
        with trace.stage("normalize"):
            text = normalize_text(job.text)
        with trace.stage("segment"):
            texts = segment_text(
                text,
                first_segment_max_chars=self._settings.first_segment_max_chars,
                max_segment_chars=self._settings.max_segment_chars,
            )
        if not texts:
            raise InvalidRequestError("input must contain speakable text", param="input")
        trace.segments = len(texts)
        plan = _Plan(
            scheduler=self.scheduler,
            metrics=self.metrics,
            crossfade_ms=self._settings.crossfade_ms,
            deadline=trace.started_at + self._settings.request_timeout_s,
            store=None if key is None else (lambda entry: self.audio_cache.put(key, entry)),
        )
        segments = [self._params(text, voice, job) for text in texts]
        engine = self.registry.engine(voice)
        return SpeechStream(job, voice, engine, trace, segments=segments, plan=plan, custom=custom)

    def _resolve(self, job: SpeechJob) -> tuple[VoiceInfo, CustomVoiceSpeech | None]:
        """The voice that speaks, and for a custom voice how its audio is converted."""
        try:
            return self.registry.resolve(job.voice, job.model), None
        except VoiceNotFoundError:
            custom = self.library.find(job.voice, job.caller) if self.library is not None else None
            if custom is None:
                raise
        base = self.registry.resolve(custom.base_voice, job.model)
        speech = CustomVoiceSpeech(custom, lambda: self._custom_plan(custom, base), self._settings.conversion_overlap_s)
        return base, speech

    def _custom_plan(self, custom: CustomVoice, base: VoiceInfo) -> ConversionPlan:
        assert self.library is not None, "custom voices are only resolved through the library"
        source, target = self.library.builtin_features(base), self.library.features(custom)
        return self._converter.plan(source, target, ConversionOptions())

    def _cache_key(self, job: SpeechJob, voice: VoiceInfo, custom: CustomVoiceSpeech | None) -> str:
        settings = self._settings
        return audio_cache_key(
            version=__version__, engine=voice.engine, voice=voice.id, text=job.text, speed=job.speed,
            custom_voice=custom.voice.id if custom else None, envelope_strength=settings.conversion_envelope_strength,
            overlap_s=settings.conversion_overlap_s,
            format=job.response_format, noise_scale=settings.noise_scale, noise_w=settings.noise_w,
            crossfade_ms=settings.crossfade_ms, max_segment_chars=settings.max_segment_chars,
            first_segment_max_chars=settings.first_segment_max_chars,
        )  # fmt: skip

    def _params(self, text: str, voice: VoiceInfo, job: SpeechJob) -> SynthesisParams:
        return SynthesisParams(
            text=text,
            voice=voice,
            speed=job.speed,
            noise_scale=self._settings.noise_scale,
            noise_w=self._settings.noise_w,
            instructions=job.instructions,
        )

    def warmup(self) -> None:
        for engine in self.registry.engines():
            engine.warmup()

    def close(self) -> None:
        self.scheduler.close()
        if self.library is not None:
            self.library.close()
