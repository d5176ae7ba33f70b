"""`JobService`: long-form speech (books, batches) as persisted background jobs on the shared scheduler.

A job's segments run in the scheduler's background class, so interactive requests always go first; each job keeps
only `window` segments queued, so it neither crowds the queue nor holds admission room. Every finished segment is
on disk before it counts as done (`JobStore`), so a job resumes after a crash from its first unfinished segment,
and the finished file is assembled from those segments once, never held in memory."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from voxserve.audio.encode import CONTENT_TYPES
from voxserve.conversion.cancellation import Cancellation
from voxserve.engines.base import SegmentAudio
from voxserve.errors import (
    ConflictError,
    EngineError,
    InputTooLongError,
    InvalidRequestError,
    NotFoundError,
    VoiceNotFoundError,
    VoxError,
)
from voxserve.frontend.document import (
    BatchItem,
    Chapter,
    detect_format,
    parse_document,
    parse_jsonl,
    parse_text,
)
from voxserve.frontend.normalize import normalize_text
from voxserve.frontend.segment import segment_text
from voxserve.obs.metrics import Metrics
from voxserve.obs.trace import RequestTrace
from voxserve.process import BackgroundPriority, lower_thread_priority, lower_to_background, prestarted_pool
from voxserve.scheduler.pool import Priority, Scheduler
from voxserve.service.conversion import Upload
from voxserve.service.job_audio import (
    Assembler,
    Timeline,
    caption_paths,
    chapter_captions,
    part_audio,
    part_segments,
    word_places,
    write_audio_file,
    write_captions,
    write_zip,
)
from voxserve.service.loudness import OutputLevel, VoiceLoudness
from voxserve.service.voices import VoiceRegistry
from voxserve.storage.jobs import SAMPLE_BYTES, Job, JobPart, JobSegment, JobStore, new_job_id
from voxserve.types import SPOKEN_S_PER_CHAR, AudioChunk, Caller, SynthesisParams, VoiceInfo

logger = logging.getLogger(__name__)
JOB_FORMATS = (*CONTENT_TYPES, "m4b")
CONTENT_TYPES_WITH_M4B = {**CONTENT_TYPES, "m4b": "audio/mp4"}
# Encoded output next to the 16-bit segments, as a share of their size: WAV/PCM the same again, the rest less.
ENCODED_SHARE = {"wav": 1.0, "pcm": 1.0, "flac": 0.7}
OTHER_ENCODED_SHARE = 0.15
JOB_THREADS = 2
_CALIBRATION_TIMEOUT_S = 600.0  # a voice's loudness calibration, queued behind live speech like the job itself
T = TypeVar("T")
JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/ndjson")


Charge = Callable[[int], None]


def _free(chars: int) -> None:
    """Jobs submitted without a key's limits to count against."""


class DiskBudgetError(VoxError):
    """A job would not fit (or no longer fits) in `jobs_disk_bytes`."""

    status_code = 507
    type = "server_error"
    code = "disk_budget_exceeded"


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What the job service is configured with (the composition root fills it from `Settings`)."""

    max_job_chars: int
    max_upload_bytes: int
    max_batch_items: int
    max_running_jobs: int
    retention_s: float
    disk_bytes: int
    paragraph_pause_ms: int
    chapter_pause_ms: int
    max_segment_chars: int
    crossfade_ms: float
    noise_scale: float
    noise_w: float
    niceness: int = 0  # how far below interactive work the job's own CPU work (phonemes, writes, files) runs
    background_priority: BackgroundPriority | None = None  # where it runs instead of at `niceness`


@dataclass(frozen=True, slots=True)
class JobVoice:
    """How a job (or one batch item) is spoken and written."""

    voice: str
    model: str = "tts-1"
    response_format: str = "mp3"
    speed: float = 1.0
    loudness: float | str | None = None  # target LUFS, "off", or `None` for the server's


@dataclass(frozen=True, slots=True)
class _Speaker:
    voice: VoiceInfo
    speed: float
    loudness: float | str | None = None  # target LUFS, "off", or `None` for the server's


@dataclass(frozen=True, slots=True)
class Progress:
    """A job's state for the API: stored counters plus rates measured while this process ran it."""

    job: Job
    chars_per_s: float | None
    eta_s: float | None


class _Signal:
    """Wakes everyone waiting for a change (progress, status) in any job."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as the event fires.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._event.wait()


class JobService:
    """Creates, runs, resumes and serves jobs. `start()` within the event loop; `close()` stops the runners
    (the jobs stay `running` on disk and resume at the next start)."""

    def __init__(
        self, store: JobStore, registry: VoiceRegistry, scheduler: Scheduler, options: JobOptions,
        metrics: Metrics | None = None, loudness: VoiceLoudness | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.loudness = loudness
        self.registry = registry
        self.scheduler = scheduler
        self.options = options
        self.metrics = metrics or Metrics()
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._rates: dict[str, tuple[float, int]] = {}  # job id -> (when this process started it, chars done then)
        self._signal: _Signal | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        # Enough queued that every worker (and every batch) stays busy while the runner writes a segment out and
        # prepares the next, both below live requests' priority (twice this measured 0.87x the in-process limit).
        self._window = 4 * scheduler.options.workers * scheduler.options.max_batch_size
        self._disk_used = store.disk_bytes()  # counted afresh at each sweep; between sweeps, what was written
        self._zip_lock = threading.Lock()
        # Phonemizing, checksumming and encoding a book are background work too: on the default executor they
        # would take the cores at the priority of the live requests the lane yields to.
        self._executor = prestarted_pool(JOB_THREADS, "voxserve-jobs", _lower_job_thread, (options,))

    # lifecycle

    async def start(self) -> None:
        self._signal = _Signal()
        self._wake = asyncio.Event()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="voxserve-jobs")

    async def close(self) -> None:
        tasks = [task for task in (self._dispatcher, *self._runners.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runners.clear()
        self._executor.shutdown(wait=True)

    # creating

    def submit_text(
        self, text: str, voice: JobVoice, caller: Caller, *, markdown: bool, title: str = "",
        chapter_pattern: str | None = None, charge: Charge = _free,
    ) -> Job:  # fmt: skip
        """A book from text (Markdown headings, or lines matching `chapter_pattern`, start chapters). The
        `submit_*` calls block (they parse, segment and write the job); call them off the event loop. `charge`
        receives the job's characters before anything is made (a key's daily limit raises there)."""
        if len(text) > self.options.max_job_chars:
            raise InputTooLongError(
                f"input is {len(text)} characters; the limit is {self.options.max_job_chars}", param="input"
            )
        chapters = parse_text(text, markdown=markdown, chapter_pattern=chapter_pattern)
        return self.submit_book(chapters, voice, caller, title, charge=charge)

    def submit_document(
        self, upload: Upload, voice: JobVoice, caller: Caller, *, title: str = "", chapter_pattern: str | None = None,
        charge: Charge = _free,
    ) -> Job:  # fmt: skip
        """A book from an uploaded text, Markdown or EPUB file, or a batch from a JSONL file of items."""
        if _is_jsonl(upload):
            items = parse_jsonl(
                upload.data, max_items=self.options.max_batch_items, max_chars=self.options.max_job_chars
            )
            return self.submit_batch(items, voice, caller, charge=charge)
        fmt = detect_format(upload.filename, upload.content_type, upload.data)
        chapters = parse_document(
            upload.data, fmt, chapter_pattern=chapter_pattern, max_chars=self.options.max_job_chars
        )
        return self.submit_book(chapters, voice, caller, title or Path(upload.filename).stem, charge=charge)

    def submit_book(
        self, chapters: list[Chapter], voice: JobVoice, caller: Caller, title: str = "", *, charge: Charge = _free
    ) -> Job:
        """A job speaking `chapters` in order, one file (an M4B gets chapter marks)."""
        resolved = self._voice(voice, "voice")
        spoken = [(chapter.title, texts) for chapter in chapters if (texts := self._speakable(chapter.paragraphs))]
        parts, segments = [], []
        for index, (chapter_title, paragraphs) in enumerate(spoken):
            parts.append(JobPart(index, chapter_title, {"sample_rate": resolved.sample_rate}))
            segments += self._segments(index, paragraphs, len(segments), last=index == len(spoken) - 1)
        return self._create("speech", voice, caller, parts, segments, resolved.sample_rate, title, charge)

    def submit_batch(self, items: list[BatchItem], voice: JobVoice, caller: Caller, *, charge: Charge = _free) -> Job:
        """A job making one file per item; an item may name its own voice, model, format and speed."""
        if not items:
            raise InvalidRequestError("a batch needs at least one item", param="items")
        if len(items) > self.options.max_batch_items:
            raise InvalidRequestError(
                f"a batch holds at most {self.options.max_batch_items} items; got {len(items)}", param="items"
            )
        if len({item.id for item in items}) != len(items):
            raise InvalidRequestError("batch item ids must be unique", param="items")
        parts, segments, rate = [], [], 0
        for index, item in enumerate(items):
            item_voice = _item_voice(voice, item, index)
            resolved = self._voice(item_voice, f"items[{index}].voice")
            rate = rate or resolved.sample_rate
            parts.append(JobPart(index, item.id, {**_voice_fields(item_voice), "sample_rate": resolved.sample_rate}))
            texts = self._speakable((item.input,))
            if not texts:
                raise InvalidRequestError(f"item {item.id!r} has no speakable text", param="items")
            segments += self._segments(index, texts, len(segments), last=True)
        return self._create("batch", voice, caller, parts, segments, rate, "", charge)

    def _create(
        self, kind: str, voice: JobVoice, caller: Caller, parts: list[JobPart], segments: list[JobSegment],
        sample_rate: int, title: str, charge: Charge,
    ) -> Job:  # fmt: skip
        chars = sum(len(segment.text) for segment in segments)
        if not segments:
            raise InvalidRequestError("the job has no speakable text", param="input")
        if chars > self.options.max_job_chars:
            raise InputTooLongError(
                f"the job is {chars} characters; the limit is {self.options.max_job_chars}", param="input"
            )
        self._check_disk(self.estimated_bytes(chars, voice.speed, sample_rate, voice.response_format))
        charge(chars)
        job = Job(
            id=new_job_id(), owner=caller.key_id, kind=kind, status="queued", created_at=time.time(),
            started_at=None, finished_at=None, request={**_voice_fields(voice), "title": title}, error=None,
            error_code=None, segments_total=len(segments), segments_done=0, chars_total=chars, chars_done=0,
            audio_s=0.0, sample_rate=sample_rate,
        )  # fmt: skip
        self.store.create(job, parts, segments)
        self.metrics.jobs.labels("queued").inc()
        logger.info("job %s: %s, %d segments, %d characters", job.id, kind, len(segments), chars)
        return job

    def wake(self) -> None:
        """Tell the dispatcher a job was created (from the event loop)."""
        if self._wake is not None:
            self._wake.set()
        self._changed()

    def _voice(self, voice: JobVoice, param: str) -> VoiceInfo:
        if voice.response_format not in JOB_FORMATS:
            raise InvalidRequestError(
                f"response_format must be one of {', '.join(JOB_FORMATS)}", param="response_format"
            )
        try:
            return self.registry.resolve(voice.voice, voice.model)
        except VoiceNotFoundError as exc:
            raise VoiceNotFoundError(f"{exc.message} (jobs speak built-in voices)", param=param) from exc

    def _segments(self, part: int, paragraphs: list[list[str]], start: int, *, last: bool) -> list[JobSegment]:
        """A part's segments (its paragraphs' texts), numbered from `start`; each paragraph's last one pauses
        (a chapter's last one longer, the job's last one not at all)."""
        segments: list[JobSegment] = []
        for number, texts in enumerate(paragraphs):
            for offset, text in enumerate(texts):
                pause = 0
                if offset == len(texts) - 1:
                    pause = self.options.paragraph_pause_ms
                    if number == len(paragraphs) - 1:
                        pause = 0 if last else self.options.chapter_pause_ms
                segments.append(JobSegment(start + len(segments), part, text, pause))
        return segments

    def _speakable(self, paragraphs: tuple[str, ...]) -> list[list[str]]:
        """Each paragraph's segment texts, leaving out paragraphs with nothing to say (markup, emoji)."""
        limit = self.options.max_segment_chars
        split = (segment_text(normalize_text(paragraph), first_segment_max_chars=limit, max_segment_chars=limit)
                 for paragraph in paragraphs)  # fmt: skip
        return [texts for texts in split if texts]

    def estimated_bytes(self, chars: int, speed: float, sample_rate: int, response_format: str) -> int:
        """Disk a job will take: its 16-bit segments and its encoded file."""
        pcm = chars * SPOKEN_S_PER_CHAR / speed * sample_rate * SAMPLE_BYTES
        return round(pcm * (1 + ENCODED_SHARE.get(response_format, OTHER_ENCODED_SHARE)))

    def _check_disk(self, more_bytes: int) -> None:
        used = self._disk_used = self.store.disk_bytes()
        if used + more_bytes > self.options.disk_bytes:
            raise DiskBudgetError(
                f"the job needs about {more_bytes >> 20} MiB and jobs already use {used >> 20} MiB of the "
                f"{self.options.disk_bytes >> 20} MiB budget (jobs_disk_bytes); delete finished jobs or raise it"
            )

    # reading

    def get(self, job_id: str, caller: Caller) -> Progress:
        job = self.store.get(job_id)
        # Stricter than voices: a job made with no key (before keys existed) is for admins only.
        if job is None or not (caller.admin or job.owner == caller.key_id):
            raise NotFoundError(f"no job {job_id}", param="job_id", code="job_not_found")
        return self._progress(job)

    def list(self, caller: Caller, *, status: str | None, limit: int, after: str | None) -> list[Progress]:
        jobs = self.store.list(owner=caller.key_id, every_owner=caller.admin, status=status, limit=limit, after=after)
        return [self._progress(job) for job in jobs]

    def parts(self, job: Job) -> list[JobPart]:
        return self.store.parts(job.id)

    def _progress(self, job: Job) -> Progress:
        started = self._rates.get(job.id)
        if started is None or job.finished:
            return Progress(job, None, None)
        elapsed = time.monotonic() - started[0]
        rate = (job.chars_done - started[1]) / elapsed if elapsed > 1 else 0.0
        eta = (job.chars_total - job.chars_done) / rate if rate > 0 else None
        return Progress(job, round(rate, 1), None if eta is None else round(eta, 1))

    async def events(self, job_id: str, caller: Caller) -> AsyncIterator[Progress]:
        """The job's progress: at once, after every change, and at least once a second; last, the final state."""
        assert self._signal is not None, "start() first"
        while True:
            progress = await asyncio.to_thread(self.get, job_id, caller)
            yield progress
            if progress.job.finished:
                return
            await self._signal.wait(1.0)

    # cancelling and deleting

    async def cancel(self, job_id: str, caller: Caller) -> Progress:
        job = (await asyncio.to_thread(self.get, job_id, caller)).job
        self._check_manages(job, caller)
        if not await asyncio.to_thread(self.store.set_status, job_id, "cancelled"):
            finished = await asyncio.to_thread(self.get, job_id, caller)
            raise ConflictError(f"job {job_id} is already {finished.job.status}", code="job_finished")
        self.metrics.jobs.labels("cancelled").inc()
        runner = self._runners.get(job_id)
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        self._changed()
        return await asyncio.to_thread(self.get, job_id, caller)

    async def delete(self, job_id: str, caller: Caller) -> None:
        job = (await asyncio.to_thread(self.get, job_id, caller)).job
        self._check_manages(job, caller)
        # Finished first, so neither its runner nor the dispatcher takes it up again while its files go.
        await asyncio.to_thread(self.store.set_status, job_id, "cancelled")
        runner = self._runners.get(job_id)
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await asyncio.to_thread(self.store.delete, job_id)
        self._disk_used = await asyncio.to_thread(self.store.disk_bytes)
        self._changed()

    @staticmethod
    def _check_manages(job: Job, caller: Caller) -> None:
        if not caller.manages(job.owner):
            raise NotFoundError(f"no job {job.id}", param="job_id", code="job_not_found")

    # running

    async def _dispatch(self) -> None:
        """Keep up to `max_running_jobs` jobs running, the oldest first (those a crash interrupted before the
        queued); sweep out jobs past their retention."""
        assert self._wake is not None
        next_sweep = 0.0
        while True:
            self._wake.clear()  # before looking: a job made while we look wakes the next round
            try:
                if time.monotonic() >= next_sweep:
                    await asyncio.to_thread(self._sweep)
                    next_sweep = time.monotonic() + 60
                await self._start_runners()
            except Exception:
                # A store that is briefly locked or a file removed under us: the next round tries again.
                logger.exception("the job dispatcher failed a round; it goes on")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self._wake.wait()

    async def _start_runners(self) -> None:
        if len(self._runners) >= self.options.max_running_jobs:
            return
        for job in await asyncio.to_thread(self.store.unfinished):
            if len(self._runners) >= self.options.max_running_jobs:
                break
            if job.id not in self._runners:
                self._runners[job.id] = asyncio.create_task(self._run(job), name=f"voxserve-{job.id}")

    def _sweep(self) -> None:
        """Delete jobs past their retention, and count the disk jobs use afresh (the running count between
        sweeps is only what this process wrote)."""
        for job_id in self.store.finished_before(time.time() - self.options.retention_s):
            logger.info("job %s: past its retention, deleted", job_id)
            self.store.delete(job_id)
        self._disk_used = self.store.disk_bytes()

    async def _run(self, job: Job) -> None:
        """Render `job` and record how it ended; a cancel or delete that came first wins over what it would write."""
        try:
            await self._render(job)
        except VoxError as exc:
            logger.warning("job %s failed: %s", job.id, exc.message)
            await self._end(job, "failed", error=exc.message, code=exc.code)
        except Exception:
            logger.exception("job %s failed", job.id)
            await self._end(job, "failed", error="internal error while rendering", code="job_failed")
        finally:
            self._runners.pop(job.id, None)
            self._rates.pop(job.id, None)
            self._changed()
            if self._wake is not None:
                self._wake.set()

    async def _end(self, job: Job, status: str, *, error: str | None = None, code: str | None = None) -> None:
        if await asyncio.to_thread(self.store.set_status, job.id, status, error=error, code=code):
            self.metrics.jobs.labels(status).inc()
            logger.info("job %s %s", job.id, status)

    async def _render(self, job: Job) -> None:
        if not await asyncio.to_thread(self.store.set_status, job.id, "running"):
            return  # cancelled (or deleted) since the dispatcher picked it
        self._rates[job.id] = (time.monotonic(), job.chars_done)
        self._changed()
        parts = await asyncio.to_thread(self.store.parts, job.id)
        segments = await self._in_background(self._checked_segments, job)
        speakers = [self._speaker(job, part) for part in parts]
        trace = RequestTrace(job.id, enabled=False)
        in_flight: deque[tuple[JobSegment, Future[SegmentAudio]]] = deque()
        try:
            for segment in (segment for segment in segments if not segment.done):
                while len(in_flight) >= self._window:
                    await self._finish(job, *in_flight.popleft(), speakers)
                in_flight.append((segment, await self._submit(job, segment, speakers[segment.part], trace)))
            while in_flight:
                await self._finish(job, *in_flight.popleft(), speakers)
        finally:
            for _, future in in_flight:
                self.scheduler.cancel(future)
        self._disk_used += await self._in_background(self._assemble, job.id)
        await self._end(job, "completed")

    def _checked_segments(self, job: Job) -> list[JobSegment]:
        """The job's segments, with any done segment whose file is damaged or gone marked to be made again."""
        checked = []
        for segment in self.store.segments(job.id):
            if segment.done and not self.store.verify_segment(job.id, segment):
                logger.warning("job %s: segment %d is damaged on disk; making it again", job.id, segment.index)
                self.store.reset_segment(job.id, segment, job.sample_rate)
                segment = replace(segment, samples=None, sha256=None)
            checked.append(segment)
        return checked

    def _speaker(self, job: Job, part: JobPart) -> _Speaker:
        """Who speaks a part, and how fast: the job's fields, an item's own over them."""
        fields = {**job.request, **part.request}
        try:
            voice = self.registry.resolve(str(fields["voice"]), str(fields.get("model", "tts-1")))
        except VoiceNotFoundError as exc:
            raise VoiceNotFoundError(f"the job's voice is gone: {exc.message}") from exc
        return _Speaker(voice, float(fields.get("speed", 1.0)), fields.get("loudness"))  # type: ignore[arg-type]

    async def _submit(
        self, job: Job, segment: JobSegment, speaker: _Speaker, trace: RequestTrace
    ) -> Future[SegmentAudio]:  # fmt: skip
        engine = self.registry.engine(speaker.voice)
        params = SynthesisParams(
            text=segment.text, voice=speaker.voice, speed=speaker.speed, noise_scale=self.options.noise_scale,
            noise_w=self.options.noise_w, timestamps=self.registry.engine(speaker.voice).supports_timestamps,
        )  # fmt: skip
        prepared = await self._in_background(engine.prepare, params)
        # Jobs of one key share its background lane by progress (due = segment number); keys share by fair share.
        return self.scheduler.submit(
            engine, prepared, trace, priority=Priority.BACKGROUND, due=float(segment.index), deadline=float("inf"),
            tenant=f"jobs:{job.owner or ''}",
        )  # fmt: skip

    async def _finish(
        self, job: Job, segment: JobSegment, future: Future[SegmentAudio], speakers: list[_Speaker]
    ) -> None:  # fmt: skip
        try:
            audio = await asyncio.wrap_future(future)
        except VoxError as exc:
            logger.warning("job %s: segment %d failed: %s", job.id, segment.index, exc.message)
            raise EngineError(f"segment {segment.index} could not be made ({exc.code})") from exc
        speaker = speakers[segment.part]
        voice, samples = speaker.voice, audio.samples
        if self.loudness is not None:
            level = await self._in_background(self._level, voice, f"jobs:{job.owner or ''}", speaker.loudness)
            samples = np.concatenate([level.push(samples), level.flush()])
        sample_rate = voice.sample_rate
        size = len(samples) * SAMPLE_BYTES
        if self._disk_used + size > self.options.disk_bytes:
            raise DiskBudgetError("jobs passed their disk budget (jobs_disk_bytes) while this job rendered")
        words = word_places(audio.alignment)
        await self._in_background(self.store.save_segment, job.id, segment, samples, sample_rate, words)
        self._disk_used += size
        self.metrics.job_segments.inc()
        self._changed()

    def _level(self, voice: VoiceInfo, tenant: str, requested: float | str | None) -> OutputLevel:
        """A segment's level stage: the voice's gain to the job's target (its own, `off`, or the server's; measured
        once per voice, through the scheduler as the job's work), then the limiter."""
        assert self.loudness is not None
        loudness, engine = self.loudness, self.registry.engine(voice)
        target = loudness.target(requested)
        return loudness.level(voice, target, lambda: loudness.gain_db(
            voice, engine, target, cancellation=Cancellation.after(_CALIBRATION_TIMEOUT_S), tenant=tenant
        ))  # fmt: skip

    async def _in_background(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(function, *args))

    def _changed(self) -> None:
        if self._signal is not None:
            self._signal.changed()

    # audio

    def result_path(self, job: Job, part: JobPart | None = None) -> Path:
        fields = {**job.request, **(part.request if part else {})}
        name = "result" if part is None else f"item-{part.index:05d}"
        return self.store.job_dir(job.id) / f"{name}.{fields['response_format']}"

    def _assemble(self, job_id: str) -> int:
        """The finished files: one for a book (M4B chapter marks from its chapters), one per batch item. Returns
        the bytes they take."""
        job = self.store.get(job_id)
        assert job is not None
        segments, parts = self.store.segments(job_id), self.store.parts(job_id)
        crossfade = self.options.crossfade_ms
        if job.kind == "batch":
            for part in parts:
                rate = int(part.request["sample_rate"])  # type: ignore[call-overload]
                timeline = Timeline(rate)
                audio = part_audio(self.store, job_id, part_segments(segments, part), rate, crossfade, timeline)
                fmt = str(part.request.get("response_format", job.request["response_format"]))
                write_audio_file(self.result_path(job, part), fmt, rate, [(part.name, audio)], part.name)
                write_captions(self.result_path(job, part), timeline)
            return sum(self._result_bytes(self.result_path(job, part)) for part in parts)
        timeline = Timeline(job.sample_rate)
        chapters = [
            (part.name or f"Chapter {part.index + 1}",
             part_audio(self.store, job_id, part_segments(segments, part), job.sample_rate, crossfade, timeline))
            for part in parts
        ]  # fmt: skip
        write_audio_file(
            self.result_path(job), str(job.request["response_format"]), job.sample_rate, chapters,
            str(job.request.get("title", "")),
        )  # fmt: skip
        write_captions(self.result_path(job), timeline)
        chapters = [chapter_captions(self.store.job_dir(job_id), number) for number in range(1, len(parts) + 1)]
        for number, chapter in enumerate(chapters):
            write_captions(chapter, timeline.part(number))
        return self._result_bytes(self.result_path(job)) + sum(map(self._result_bytes, chapters))

    @staticmethod
    def _result_bytes(path: Path) -> int:
        """An audio file (or a chapter, which has no file of its own) and the captions beside it."""
        return sum(file.stat().st_size for file in (path, *caption_paths(path).values()) if file.exists())

    def items_zip(self, job: Job) -> Path:
        """Every item's file in one ZIP (made on first request, then kept with the job)."""
        path = self.store.job_dir(job.id) / "items.zip"
        with self._zip_lock:  # two first requests would otherwise both write it
            if path.exists():
                return path
            parts = self.store.parts(job.id)
            write_zip(path, [(f"{part.name}.{self.result_path(job, part).suffix[1:]}", self.result_path(job, part))
                             for part in parts])  # fmt: skip
        return path

    async def follow(self, job: Job, part: JobPart | None) -> AsyncGenerator[AudioChunk, None]:
        """The audio of a job that may still be running (or of one part), as its segments finish in order; ends
        when the job does. A job that fails or is cancelled ends the audio where it stopped."""
        assert self._signal is not None, "start() first"
        segments = await asyncio.to_thread(self.store.segments, job.id)
        if part is not None:
            segments = part_segments(segments, part)
        rate = int(part.request["sample_rate"]) if part is not None else job.sample_rate  # type: ignore[call-overload]
        assembler = Assembler(rate, self.options.crossfade_ms)
        position = 0
        while position < len(segments):
            segment = segments[position]
            if segment.done:
                try:
                    samples = await asyncio.to_thread(self.store.read_segment, job.id, segment)
                except FileNotFoundError:
                    break  # deleted meanwhile
                ready = assembler.push(samples, segment.pause_after_ms)
                position += 1
                if len(ready):
                    yield AudioChunk(ready, rate)
                continue
            current = await asyncio.to_thread(self.store.get, job.id)
            if current is None or current.status in ("failed", "cancelled"):
                break  # ends where it stopped; a deleted job ends too
            await self._signal.wait(1.0)
            fresh = {s.index: s for s in await asyncio.to_thread(self.store.segments, job.id)}
            if segment.index not in fresh:
                break
            segments = [fresh.get(s.index, s) for s in segments]
        yield AudioChunk(assembler.flush(), rate)

    def content_type(self, response_format: str) -> str:
        return CONTENT_TYPES_WITH_M4B[response_format]


def _is_jsonl(upload: Upload) -> bool:
    return upload.filename.lower().endswith((".jsonl", ".ndjson")) or upload.content_type in JSONL_TYPES


def _voice_fields(voice: JobVoice) -> dict[str, object]:
    fields: dict[str, object] = {"voice": voice.voice, "model": voice.model, "response_format": voice.response_format,
                                 "speed": voice.speed}  # fmt: skip
    return fields if voice.loudness is None else {**fields, "loudness": voice.loudness}


def _item_voice(default: JobVoice, item: BatchItem, index: int) -> JobVoice:
    """An item's own voice fields over the job's."""
    options = item.options
    try:
        speed = float(options.get("speed", default.speed))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"items[{index}].speed must be a number", param="items") from exc
    if not 0.25 <= speed <= 4.0:
        raise InvalidRequestError(f"items[{index}].speed must be within 0.25..4.0", param="items")
    return JobVoice(
        voice=str(options.get("voice", default.voice)), model=str(options.get("model", default.model)),
        response_format=str(options.get("response_format", default.response_format)), speed=speed,
        loudness=default.loudness,
    )  # fmt: skip


def _lower_job_thread(options: JobOptions) -> None:
    if options.background_priority is None:
        lower_thread_priority(options.niceness)
    else:
        lower_to_background(options.background_priority)
