"""`SpeechService`: a speech request becomes a lazy stream of audio chunks, then of encoded bytes."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np

from voxserve import __version__
from voxserve.audio.dsp import SegmentJoiner
from voxserve.audio.encode import CONTENT_TYPES
from voxserve.cache.audio import AudioCache, CachedAudio, audio_cache_key
from voxserve.conversion.base import ConversionOptions, ConversionPlan, Converter
from voxserve.conversion.cancellation import Cancellation
from voxserve.conversion.windows import WindowedConversion
from voxserve.conversion.world_converter import WorldConverter
from voxserve.engines.base import Engine, PreparedSegment, SegmentAudio
from voxserve.errors import (
    DeadlineExceededError,
    InputTooLongError,
    InvalidRequestError,
    NotFoundError,
    VoiceNotFoundError,
)
from voxserve.frontend.normalize import normalize_text
from voxserve.frontend.segment import segment_text
from voxserve.obs.metrics import Metrics
from voxserve.obs.telemetry import Telemetry, TelemetryOptions
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.pool import Priority, Reservation, Scheduler
from voxserve.service.captions import caption_cues, render
from voxserve.service.loudness import LoudnessOptions, OutputLevel, VoiceLoudness
from voxserve.service.response import AudioResponse
from voxserve.service.timestamps import (
    TIMESTAMP_LEVELS,
    InputMap,
    TimestampBuilder,
    Timestamps,
    Transcript,
    WordTiming,
)
from voxserve.service.voice_library import VoiceLibrary
from voxserve.service.voices import VoiceRegistry
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
    timestamps: str = "none"  # "word" or "phoneme": time them (see `AudioResponse.timestamps`)
    loudness: float | str | None = None  # target LUFS, "off" (the voice's own level, still limited), `None`: server's


@dataclass(frozen=True, slots=True)
class CustomVoiceSpeech:
    """A custom voice: its base voice speaks, then the audio is converted toward it as it streams."""

    voice: CustomVoice
    plan: Callable[[str, Cancellation], ConversionPlan]  # blocking; for a tenant, stopped by the cancellation
    overlap_s: float


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    """What the speech service is configured with (the composition root fills it from `Settings`)."""

    max_input_chars: int
    first_segment_max_chars: int
    max_segment_chars: int
    segment_growth: bool  # each segment after the first at most about twice the text before it
    decode_windows: bool  # a response's first segment comes window by window (engines that support it)
    crossfade_ms: float
    request_timeout_s: float
    noise_scale: float
    noise_w: float
    conversion_overlap_s: float
    conversion_envelope_strength: float
    cache_captions: bool = True  # cached results keep their word timings, for `cached_captions`


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a response's audio needs from its service."""

    scheduler: Scheduler
    metrics: Metrics
    crossfade_ms: float
    timeout_s: float  # each segment's deadline: this long after its text was decided
    windowed_first: bool  # the first segment decoded window by window


@dataclass(frozen=True, slots=True)
class SegmentStarted:
    """A segment whose audio is about to be sent: its place in the response, its text, and where its audio
    starts (seconds from the response's start)."""

    index: int
    text: str
    start_s: float


class SegmentFeed:
    """The segments of one response, in order, as their text is decided: all at once for a request, one by one
    for text that streams in. `lookahead` bounds the segments queued ahead of the one being played (0: all)."""

    def __init__(self, segments: Sequence[SynthesisParams] = (), *, closed: bool = True, lookahead: int = 0) -> None:
        now = time.perf_counter()
        self._items: deque[tuple[SynthesisParams, float]] = deque((params, now) for params in segments)
        self._closed = closed
        self._changed = asyncio.Event()
        self.lookahead = lookahead
        self.streaming = not closed  # its segments' deadlines run from when each is queued, not from the start
        # The queue room a response asks for when it starts: all its segments, or as many as it may queue ahead.
        self.admitted = lookahead if self.streaming and lookahead else max(len(self._items), 1)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, params: SynthesisParams) -> None:
        assert not self._closed, "a closed feed takes no more segments"
        self._items.append((params, time.perf_counter()))
        self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    async def take(self, most: int) -> list[tuple[SynthesisParams, float]]:
        """Up to `most` segments (with when each was decided), waiting for one; `[]` once closed and drained."""
        while not self._items and not self._closed:
            self._changed.clear()
            await self._changed.wait()
        return [self._items.popleft() for _ in range(min(most, len(self._items)))]


@dataclass(frozen=True, slots=True)
class StreamedSpeech:
    """A response whose text streams in: its audio, the feed its segments go into (`segment` makes one from a
    decided text), each segment as its audio starts, and the timestamps `level` it was opened with."""

    response: AudioResponse
    feed: SegmentFeed
    started: list[SegmentStarted]
    segment: Callable[[str], SynthesisParams]
    level: str


T = TypeVar("T")
LevelStage = Callable[[ConversionPlan | None, Cancellation], OutputLevel]  # blocking: may measure the voice first
_WARMUP_TIMEOUT_S = 300.0

_Submitted = tuple[PreparedSegment, "Future[SegmentAudio]", float] | BaseException | None


class _SpeechAudio:
    """One response's audio, made lazily: segments are queued on the scheduler as their text is decided and
    synthesize in parallel across workers; they come back in order, joined with a short crossfade (and, for a
    custom voice, converted as they arrive)."""

    def __init__(
        self, voice: VoiceInfo, engine: Engine, trace: RequestTrace, feed: SegmentFeed, plan: _Plan,
        custom: CustomVoiceSpeech | None, tenant: str, level: LevelStage,
        timing: TimestampBuilder | None = None,
    ) -> None:  # fmt: skip
        self.trace = trace
        self._level = level
        self.voice = voice
        self._engine = engine
        self._feed = feed
        self._plan = plan
        self._custom = custom
        self._tenant = tenant
        self._timing = timing
        self._playback_s = 0.0  # estimated audio of the segments queued so far: when a listener reaches the next
        self.timestamps: list[Timestamps] = []  # each segment's, added before the chunk that starts it
        self.started: list[SegmentStarted] = []  # likewise

    async def chunks(self) -> AsyncGenerator[AudioChunk, None]:
        """The joined audio, chunk by chunk, as segments finish in order. The response is admitted when
        iteration starts (`QueueFullError` then). However the iteration ends (done, failed, closed early, or
        cancelled while segments are still being submitted), every segment it queued is cancelled."""
        with self._plan.scheduler.admit(self._feed.admitted) as reservation:
            submitted: asyncio.Queue[_Submitted] = asyncio.Queue()
            room = asyncio.Semaphore(self._feed.lookahead) if self._feed.lookahead else None
            submitter = asyncio.create_task(self._submit_all(reservation, submitted, room))
            try:
                conversion = await self._open_conversion()
                level = await self._cancellable("loudness", self._level, conversion)
                windows = None if conversion is None else self._windows(conversion)
                joiner = SegmentJoiner(round(self._plan.crossfade_ms * self.voice.sample_rate / 1000))
                index = 0
                while (item := await submitted.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    prepared, future, deadline = item
                    audio = await self._result(future, deadline)
                    reservation.finished(future)
                    ready = await self._join(joiner.push, audio.samples, windows, level)
                    start_s = joiner.last_start / self.voice.sample_rate
                    self.started.append(SegmentStarted(index, prepared.params.text, start_s))
                    if self._timing is not None:
                        self.timestamps.append(self._timing.segment(prepared, audio, joiner.last_start))
                    index += 1
                    if len(ready):
                        yield AudioChunk(ready, self.voice.sample_rate)
                    while (more := audio.more) is not None:  # the segment's next window
                        audio = await self._result(more, deadline)
                        reservation.finished(more)
                        ready = await self._join(joiner.extend, audio.samples, windows, level)
                        if len(ready):
                            yield AudioChunk(ready, self.voice.sample_rate)
                    if room is not None:
                        room.release()
                yield AudioChunk(await self._flush(joiner, windows, level), self.voice.sample_rate)
            finally:
                submitter.cancel()

    async def _submit_all(
        self, reservation: Reservation, submitted: asyncio.Queue[_Submitted], room: asyncio.Semaphore | None
    ) -> None:
        """Queue the feed's segments as they come: the first on its own, so a worker starts on it while the rest
        are phonemized. Ends the queue with `None`, or with what failed."""
        try:
            index = 0
            while batch := await self._feed.take(1 if index == 0 or room is not None else sys.maxsize):
                if room is not None:
                    await room.acquire()
                for item in await asyncio.to_thread(self._submit, reservation, index, batch):
                    submitted.put_nowait(item)
                index += len(batch)
            submitted.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the consumer, which raises it where the response is read
            submitted.put_nowait(error)

    def _submit(
        self, reservation: Reservation, start: int, batch: list[tuple[SynthesisParams, float]]
    ) -> list[tuple[PreparedSegment, Future[SegmentAudio], float]]:
        """Phonemize and queue segments `start` onwards. Runs in a thread that outlives a cancelled response, so
        it stops as soon as the response has ended (closing the reservation cancels what it queued)."""
        futures = []
        for index, (params, decided_at) in enumerate(batch, start):
            if reservation.closed:
                break
            with self.trace.stage("phonemize", segment=index):
                prepared = self._engine.prepare(params)
            # A stream's segment may wait in its feed while earlier audio plays (the lookahead): its time runs
            # from when it is queued. A request's segments share the request's deadline.
            deadline = (time.perf_counter() if self._feed.streaming else decided_at) + self._plan.timeout_s
            future = self._plan.scheduler.submit(
                self._engine, prepared, self.trace,
                priority=Priority.FIRST_SEGMENT if index == 0 else Priority.LATER_SEGMENT,
                due=self.trace.started_at + self._playback_s, deadline=deadline, tenant=self._tenant,
                reservation=reservation, windowed=index == 0 and self._plan.windowed_first,
            )  # fmt: skip
            self._playback_s += params.estimated_audio_s
            futures.append((prepared, future, deadline))
        return futures

    async def _result(self, future: Future[SegmentAudio], deadline: float) -> SegmentAudio:
        try:
            # Not `wait_for`, which on Python 3.11 can swallow a cancel that comes as the result does (a barge-in
            # would then play on).
            async with asyncio.timeout(max(deadline - time.perf_counter(), 0)):
                return await asyncio.wrap_future(future)
        except (TimeoutError, DeadlineExceededError) as exc:
            self._plan.metrics.timed_out_requests.inc()
            raise DeadlineExceededError(f"request {self.trace.request_id} passed its deadline") from exc

    async def _open_conversion(self) -> ConversionPlan | None:
        """For a custom voice, the conversion of the base voice's audio toward it (features from the cache, or
        the base voice profiled through the scheduler as this request's work, within its deadline)."""
        if self._custom is None:
            return None
        return await self._cancellable("analyze", self._custom.plan, self._tenant)

    async def _cancellable(self, stage: str, work: Callable[..., T], *args: object) -> T:
        """`work(*args, cancellation)` in a thread, timed as `stage`: blocking work that makes engine calls
        through the scheduler as this request's, stopped by its deadline or when the request goes away."""
        cancellation = Cancellation(self.trace.started_at + self._plan.timeout_s)
        try:
            return await self.trace.in_thread(stage, work, *args, cancellation)
        except asyncio.CancelledError:
            cancellation.cancel()  # the thread stops waiting and withdraws the segments it queued
            raise

    def _windows(self, conversion: ConversionPlan) -> WindowedConversion:
        assert self._custom is not None, "only a custom voice's response has a conversion"
        return WindowedConversion(conversion, self.voice.sample_rate, overlap_s=self._custom.overlap_s)

    async def _join(
        self, join: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, windows: WindowedConversion | None,
        level: OutputLevel,
    ) -> np.ndarray:  # fmt: skip
        """More audio through the joiner (`push` for a segment, `extend` for its next window), the conversion and
        the level stage: the audio that is final so far."""
        with self.trace.stage("postprocess"):
            ready = join(samples)
        if windows is not None:
            ready = await self.trace.in_thread("convert", windows.push, ready)
        with self.trace.stage("postprocess"):
            return level.push(ready)

    async def _flush(self, joiner: SegmentJoiner, windows: WindowedConversion | None, level: OutputLevel) -> np.ndarray:
        tail = joiner.flush()
        if windows is not None:
            pushed = await self.trace.in_thread("convert", windows.push, tail)
            tail = np.concatenate([pushed, await self.trace.in_thread("convert", windows.flush)])
        with self.trace.stage("postprocess"):
            return np.concatenate([level.push(tail), level.flush()])


class SpeechService:
    """Validates speech jobs and opens their responses; owns the voices, the scheduler and the audio cache."""

    def __init__(
        self, registry: VoiceRegistry, scheduler: Scheduler, options: SpeechOptions, *,
        audio_cache: AudioCache | None = None, telemetry: Telemetry | None = None,
        library: VoiceLibrary | None = None, converter: Converter | None = None,
        loudness: VoiceLoudness | None = None,
    ) -> None:  # fmt: skip
        self.registry = registry
        self.loudness = loudness or VoiceLoudness(
            LoudnessOptions(normalize=False, target_lufs=-18.0, peak_ceiling_dbfs=-1.0), scheduler
        )
        self.library = library
        self._converter = converter or WorldConverter(options.conversion_envelope_strength)
        self.scheduler = scheduler
        self.audio_cache = audio_cache or AudioCache(0)
        self.telemetry = telemetry or Telemetry(TelemetryOptions(enabled=False))
        self._options = options
        self._plan = _Plan(
            self.scheduler, self.metrics, options.crossfade_ms, options.request_timeout_s, options.decode_windows
        )

    @property
    def metrics(self) -> Metrics:
        return self.telemetry.metrics

    def open(self, job: SpeechJob, trace: RequestTrace | None = None) -> AudioResponse:
        """Check the job, answer it from the cache or plan its segments, recording into `trace` (the API
        starts it when the request arrives). Raises a `VoxError` for anything a client got wrong. Admission
        (`QueueFullError` when the server is at capacity) comes when the response is first iterated, so a
        response that is never iterated holds no queue room."""
        options = self._options
        trace = trace or self.telemetry.new_trace()
        trace.input_chars = len(job.text)
        trace.response_format = job.response_format
        if not job.text.strip():
            raise InvalidRequestError("input must contain text", param="input")
        if len(job.text) > options.max_input_chars:
            raise InputTooLongError(
                f"input is {len(job.text)} characters; the limit is {options.max_input_chars}", param="input"
            )
        voice, custom, engine, headers = self._speaker(job, trace)
        timed = job.timestamps != "none"
        # A timed response is always made: the cache answers with a body, not with timings as the audio streams.
        key = self._cache_key(job, voice, custom) if job.use_cache and self.audio_cache.enabled and not timed else None
        if key is not None:
            headers["X-Voxserve-Result"] = key
            with trace.stage("cache"):
                cached = self.audio_cache.get(key)
            if cached is not None:
                headers["X-Voxserve-Cache"] = "hit"
                return AudioResponse.replay(cached, job.response_format, trace, headers=headers)
        with trace.stage("normalize"):
            text = normalize_text(job.text)
        with trace.stage("segment"):
            texts = segment_text(
                text,
                first_segment_max_chars=options.first_segment_max_chars,
                max_segment_chars=options.max_segment_chars,
                growing=options.segment_growth,
            )
        if not texts:
            raise InvalidRequestError("input must contain speakable text", param="input")
        trace.segments = len(texts)
        recorded = key is not None and options.cache_captions and engine.supports_timestamps
        segments = [self._params(text, voice=voice, job=job, timed=timed or recorded) for text in texts]
        timing = (
            TimestampBuilder(InputMap(job.text, text), voice.sample_rate, phonemes=job.timestamps == "phoneme")
            if timed or recorded else None
        )  # fmt: skip
        audio = _SpeechAudio(voice, engine, trace, SegmentFeed(segments), self._plan, custom, job.caller.tenant,
                             self._level(job, voice, engine, custom), timing)  # fmt: skip
        headers["X-Voxserve-Cache"] = "bypass" if key is None else "miss"
        return AudioResponse(
            audio.chunks, job.response_format, voice.sample_rate, trace, headers=headers,
            keep=None if key is None else self._keeper(key, voice, trace, job.text, audio if recorded else None),
            timestamps=audio.timestamps if timed else None,
        )  # fmt: skip

    def open_stream(self, job: SpeechJob, trace: RequestTrace, *, lookahead: int) -> StreamedSpeech:
        """A response whose text comes after it opens (`job.text` is not read): put each segment into its feed as
        its text is decided, and close the feed when the text ends. Checked like `open`; never cached. At most
        `lookahead` segments are queued ahead of the one being played."""
        trace.response_format = job.response_format
        voice, custom, engine, headers = self._speaker(job, trace)
        timed = job.timestamps != "none"
        feed = SegmentFeed(closed=False, lookahead=lookahead)
        timing = (
            TimestampBuilder(Transcript(), voice.sample_rate, phonemes=job.timestamps == "phoneme") if timed else None
        )
        audio = _SpeechAudio(
            voice, engine, trace, feed, self._plan, custom, job.caller.tenant, self._level(job, voice, engine, custom),
            timing,
        )  # fmt: skip
        response = AudioResponse(audio.chunks, job.response_format, voice.sample_rate, trace, headers=headers,
                                 timestamps=audio.timestamps if timed else None)  # fmt: skip
        segment = partial(self._params, voice=voice, job=job, timed=timed)
        return StreamedSpeech(response, feed, audio.started, segment, job.timestamps)

    def _speaker(
        self, job: SpeechJob, trace: RequestTrace
    ) -> tuple[VoiceInfo, CustomVoiceSpeech | None, Engine, dict[str, str]]:
        """The voice that speaks `job` (for a custom voice, its base voice and the conversion), its engine, and
        the headers that say so; `InvalidRequestError` for timestamps the engine cannot give."""
        voice, custom = self._resolve(job)
        engine = self.registry.engine(voice)
        if job.timestamps not in TIMESTAMP_LEVELS:
            raise InvalidRequestError(f"timestamps must be one of {', '.join(TIMESTAMP_LEVELS)}", param="timestamps")
        if job.timestamps != "none" and not engine.supports_timestamps:
            raise InvalidRequestError(
                f"voice {job.voice!r} ({voice.engine}) cannot give timestamps; Piper voices can", param="timestamps"
            )
        trace.engine, trace.voice = voice.engine, custom.voice.id if custom else voice.id
        headers = {"X-Voxserve-Voice": trace.voice}
        if job.instructions and not engine.supports_instructions:
            headers["X-Voxserve-Instructions"] = "ignored"
        return voice, custom, engine, headers

    def _level(self, job: SpeechJob, voice: VoiceInfo, engine: Engine, custom: CustomVoiceSpeech | None) -> LevelStage:
        """The response's level stage, made once its conversion (for a custom voice) is known."""

        def level(conversion: ConversionPlan | None, cancellation: Cancellation) -> OutputLevel:
            target = self.loudness.target(job.loudness)
            converted = None if conversion is None or custom is None else (_voice_key(custom.voice), conversion)
            return self.loudness.level(
                voice, target, lambda: self.loudness.gain_db(
                    voice, engine, target, cancellation=cancellation, tenant=job.caller.tenant, custom=converted
                ),
            )  # fmt: skip

        return level

    def cached_captions(self, result: str, caption_format: str, max_chars: int) -> str:
        """The captions of a cached result (`X-Voxserve-Result` of its response), from the word timings recorded
        when it was made."""
        cached = self.audio_cache.get(result)
        if cached is None:
            raise NotFoundError(
                f"no cached result {result!r}: it was never made, or it has left the cache", code="result_not_found"
            )
        if cached.timings is None:
            raise NotFoundError(f"result {result!r} was cached without timings (its voice gives none)",
                                code="captions_not_found")  # fmt: skip
        text, words = cached.timings["text"], cached.timings["words"]
        assert isinstance(text, str), "timings are written by `_keeper` alone"
        assert isinstance(words, list), "timings are written by `_keeper` alone"
        timed = [WordTiming(**word) for word in words]
        return render(caption_cues(text, timed, cached.audio_s, max_chars), caption_format)

    def _keeper(
        self, key: str, voice: VoiceInfo, trace: RequestTrace, text: str, recorded: _SpeechAudio | None
    ) -> Callable[[bytes], None]:
        """Where a finished body goes: the audio cache, under `key`, with the word timings `recorded` made."""

        def keep(body: bytes) -> None:
            timings = None
            if recorded is not None:
                words = Timestamps.join(recorded.timestamps).words
                timings = {"text": text, "words": [word.as_dict() for word in words]}
            content_type = CONTENT_TYPES[trace.response_format]
            self.audio_cache.put(
                key, CachedAudio(body, content_type, voice.id, voice.sample_rate, trace.audio_s, timings)
            )

        return keep

    def _resolve(self, job: SpeechJob) -> tuple[VoiceInfo, CustomVoiceSpeech | None]:
        """The voice that speaks, and for a custom voice how its audio is converted."""
        try:
            return self.registry.resolve(job.voice, job.model), None
        except VoiceNotFoundError:
            custom = self.library.find(job.voice, job.caller) if self.library is not None else None
            if custom is None:
                raise
        base = self.registry.resolve(custom.base_voice, job.model)
        speech = CustomVoiceSpeech(custom, partial(self._custom_plan, custom, base), self._options.conversion_overlap_s)
        return base, speech

    def _custom_plan(
        self, custom: CustomVoice, base: VoiceInfo, tenant: str, cancellation: Cancellation
    ) -> ConversionPlan:
        assert self.library is not None, "custom voices are only resolved through the library"
        source = self.library.builtin_features(base, cancellation, tenant=tenant)
        target = self.library.features(custom)
        return self._converter.plan(source, target, ConversionOptions())

    def _cache_key(self, job: SpeechJob, voice: VoiceInfo, custom: CustomVoiceSpeech | None) -> str:
        options = self._options
        return audio_cache_key(
            version=__version__, engine=voice.engine, voice=voice.id, text=job.text, speed=job.speed,
            custom_voice=custom.voice.id if custom else None, envelope_strength=options.conversion_envelope_strength,
            overlap_s=options.conversion_overlap_s,
            format=job.response_format, noise_scale=options.noise_scale, noise_w=options.noise_w,
            crossfade_ms=options.crossfade_ms, max_segment_chars=options.max_segment_chars,
            first_segment_max_chars=options.first_segment_max_chars, loudness=self.loudness.target(job.loudness),
            peak_ceiling=self.loudness.options.peak_ceiling_dbfs,
        )  # fmt: skip

    def _params(self, text: str, *, voice: VoiceInfo, job: SpeechJob, timed: bool) -> SynthesisParams:
        return SynthesisParams(
            text=text,
            voice=voice,
            speed=job.speed,
            noise_scale=self._options.noise_scale,
            noise_w=self._options.noise_w,
            instructions=job.instructions,
            timestamps=timed,
        )

    def measure_loudness(self) -> None:
        """Measure the loudness of the voices clients use most, at the server's target: the default voice and
        those the aliases name (any other voice is measured on its first response). Blocking."""
        target = self.loudness.server_target
        if target is None:
            return
        used = {self.registry.default_voice.id, *self.registry.aliases().values()}
        for voice in self.registry.voices():
            if voice.id in used:
                self.loudness.gain_db(
                    voice, self.registry.engine(voice), target, cancellation=Cancellation.after(_WARMUP_TIMEOUT_S)
                )

    def close(self) -> None:
        self.scheduler.close()
        if self.library is not None:
            self.library.close()


def _voice_key(voice: CustomVoice) -> str:
    """A custom voice as measured: a voice registered again from another recording is another voice."""
    return f"{voice.id}:{voice.sha256}"
