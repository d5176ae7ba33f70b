"""`SpeechService`: a speech request becomes a lazy stream of audio chunks, then of encoded bytes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from voxserve.audio.dsp import SegmentJoiner
from voxserve.audio.encode import create_encoder
from voxserve.engines.base import Engine
from voxserve.errors import InputTooLongError, InvalidRequestError
from voxserve.frontend.segment import segment_text
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.pool import Priority, Scheduler
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import Settings
from voxserve.types import AudioChunk, SynthesisParams, VoiceInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpeechJob:
    """A validated speech request, in the service's terms."""

    text: str
    voice: str
    model: str = "tts-1"
    speed: float = 1.0
    response_format: str = "mp3"
    instructions: str | None = None


class SpeechStream:
    """One request's audio. Lazy: nothing is synthesized until `audio()` or `encoded()` is iterated.

    Segments are queued on the scheduler together (the first one ahead of other requests' later segments),
    so they synthesize in parallel across workers, and come back in order, joined with a short crossfade.
    Leaving the iteration early (a client that disconnects) cancels the segments still queued.
    """

    def __init__(
        self,
        job: SpeechJob,
        segments: Sequence[SynthesisParams],
        engine: Engine,
        scheduler: Scheduler,
        trace: RequestTrace,
        crossfade_ms: float,
    ) -> None:
        self.trace = trace
        self.voice: VoiceInfo = segments[0].voice
        self.encoder = create_encoder(job.response_format, self.voice.sample_rate)
        self.instructions_ignored = bool(job.instructions) and not engine.supports_instructions
        self._segments = segments
        self._engine = engine
        self._scheduler = scheduler
        self._crossfade_samples = round(crossfade_ms * self.voice.sample_rate / 1000)

    @property
    def content_type(self) -> str:
        return self.encoder.content_type

    async def audio(self) -> AsyncIterator[AudioChunk]:
        """The joined audio, chunk by chunk, as segments finish in order."""
        futures = await asyncio.to_thread(self._submit, self._segments[:1], Priority.FIRST_SEGMENT)
        try:
            futures += await asyncio.to_thread(self._submit, self._segments[1:], Priority.LATER_SEGMENT)
            joiner = SegmentJoiner(self._crossfade_samples)
            for future in futures:
                samples = await asyncio.wrap_future(future)
                with self.trace.stage("join"):
                    ready = joiner.push(samples)
                if len(ready):
                    yield self._chunk(ready)
            yield self._chunk(joiner.flush())
        finally:
            for future in futures:
                future.cancel()

    async def encoded(self) -> AsyncIterator[bytes]:
        """The response body, piece by piece, through this response's one encoder."""
        async for chunk in self.audio():
            data = await self._encode(self.encoder.encode, chunk.samples)
            if data:
                self.trace.mark_first_audio()
                yield data
        tail = await self._encode(self.encoder.flush)
        self.trace.finish()
        logger.debug("request %s done: %s", self.trace.request_id, self.trace.summary())
        if tail:
            yield tail

    async def body(self) -> bytes:
        """The whole response body at once, for clients that asked not to stream."""
        return self.encoder.seal(b"".join([data async for data in self.encoded()]))

    def _submit(self, segments: Sequence[SynthesisParams], priority: Priority) -> list[Future[np.ndarray]]:
        futures = []
        for params in segments:
            with self.trace.stage("phonemize"):
                prepared = self._engine.prepare(params)
            futures.append(self._scheduler.submit(self._engine, prepared, self.trace, priority))
        return futures

    def _chunk(self, samples: np.ndarray) -> AudioChunk:
        self.trace.audio_s += len(samples) / self.voice.sample_rate
        return AudioChunk(samples, self.voice.sample_rate)

    async def _encode(self, encode, *args: np.ndarray) -> bytes:
        with self.trace.stage("encode"):
            return await asyncio.to_thread(encode, *args)


class SpeechService:
    """Validates speech jobs and opens their streams; owns the voices and the scheduler."""

    def __init__(self, registry: VoiceRegistry, scheduler: Scheduler, settings: Settings) -> None:
        self.registry = registry
        self.scheduler = scheduler
        self._settings = settings

    def open(self, job: SpeechJob, request_id: str | None = None) -> SpeechStream:
        """Check the job and plan its segments; raises a `VoxError` for anything a client got wrong."""
        if not job.text.strip():
            raise InvalidRequestError("input must contain text", param="input")
        if len(job.text) > self._settings.max_input_chars:
            raise InputTooLongError(
                f"input is {len(job.text)} characters; the limit is {self._settings.max_input_chars}", param="input"
            )
        voice = self.registry.resolve(job.voice, job.model)
        trace = RequestTrace(request_id)
        trace.input_chars = len(job.text)
        with trace.stage("segment"):
            texts = segment_text(
                job.text,
                first_segment_max_chars=self._settings.first_segment_max_chars,
                max_segment_chars=self._settings.max_segment_chars,
            )
        segments = [self._params(text, voice, job) for text in texts]
        return SpeechStream(
            job, segments, self.registry.engine(voice), self.scheduler, trace, self._settings.crossfade_ms
        )

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
