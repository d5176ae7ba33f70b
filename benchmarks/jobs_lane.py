"""Jobs lane: what a rendering long-form job costs live speech, how fast a job renders, whether its memory is flat.

Targets (the issue's words), each a ratio taken within one run:

1. interactive TTFA p95 beside a rendering job / alone <= 1.1, at c=1 and at c=4;
2. job throughput with no interactive traffic >= 0.95 x the in-process limit of the same run (2 workers x 1
   thread, what the job lane uses on 2 cores) on the same segments;
3. peak server RSS during the second half of a 100,000-character job <= 1.05 x the peak during its first half.

One server on 127.0.0.1 (bundled voice, default settings, no API keys, its own temporary data dir). Interactive
load: streamed 24 kHz PCM, voice alloy, `Cache-Control: no-store`, texts from benchmarks/corpus.txt, closed loop.
Jobs are books of the same corpus (5 lines to a paragraph, repeated in whole passes) sent as JSON `input`, wav.
A warm-up job of one pass measures the lane's rate, which sizes the jobs below. Each round runs six phases:

- c1_alone, c4_alone: interactive load at c=1 / c=4 for `--phase-s`, no job -> TTFA, throughput;
- c1_beside, c4_beside: the same while a job of at least 30,000 characters (and at least twice a phase at the
  warm-up rate) renders: submitted, awaited until a segment is done, then cancelled and deleted after the phase
  -> TTFA, throughput, and the job audio made during the phase (progress `audio_seconds`, context);
- in_process: one corpus pass of the job's segments (split as jobs split them) straight through the engine,
  `run_in_process` with 2 workers x 1 thread -> audio seconds per wall second;
- job: a job of whole corpus passes sized to about `--phase-s`, alone on the server -> audio seconds per wall
  second from the progress event (SSE) where segments_done reaches 2 (start-up excluded) to the one where the
  last segment is done (assembly excluded). Its head (a segment in flight at the start, counted whole) and its
  tail (one worker idle while the other ends) about cancel; run_in_process sorts segments by length, so its run
  ends on its two longest: a tail of up to one long segment in one pass, a few percent in the job's favour.

Rounds alternate the phase order (odd rounds run it backwards), so alone and beside, in-process and job swap
places and slow drift falls on every phase alike; only ratios within the run are meant to be read. Part 3 runs
once, after the rounds (not per round: it is the longest part by far): one job of `--long-chars` characters,
server VmRSS from /proc/<pid>/status sampled every second until the job completes, assembly included; halves by
characters done. `--long-chars 0` skips it. It lasts `--long-chars` over the lane's rate, which the warm-up line
prints (on the 2-core machine, most of the run); a round takes about 5 x `--phase-s` plus one in-process pass.

    .venv/bin/python benchmarks/jobs_lane.py [--rounds 3] [--phase-s 30] [--long-chars 100000] \
        -o docs/bench/jobs_lane.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from conversion_isolation import _p50, _ratio
from fair_share import CORPUS, _p95, _rounded, alternating_rounds, ratios_by_name, report_header, spread
from local_server import temporary_server
from rich.console import Console
from rich.table import Table

from voxserve.bench.corpus import load_corpus
from voxserve.bench.inprocess import run_in_process
from voxserve.bench.load import Target, run_level
from voxserve.bench.probe import ProcessProbe
from voxserve.bench.records import RequestRecord, ResourceUsage, percentiles, summarize
from voxserve.errors import ConfigError
from voxserve.frontend.document import parse_text
from voxserve.frontend.normalize import normalize_text
from voxserve.frontend.segment import segment_text
from voxserve.settings import Settings, load_settings

LOAD_PHASES = {"c1_alone": (1, False), "c1_beside": (1, True), "c4_alone": (4, False), "c4_beside": (4, True)}
PHASES = (*LOAD_PHASES, "in_process", "job")
JOB_PHASES = ("c1_beside", "c4_beside", "job")  # phases where a job renders
TTFA_P95_LIMIT = 1.1  # interactive TTFA p95 beside a job / alone, at most
THROUGHPUT_LIMIT = 0.95  # job audio-s per s / in-process, at least
RSS_LIMIT = 1.05  # peak RSS in the long job's second half / first half, at most
TARGETS = {"ttfa_p95_c1_beside_vs_alone": ("<=", TTFA_P95_LIMIT), "ttfa_p95_c4_beside_vs_alone": ("<=", TTFA_P95_LIMIT),
           "job_vs_in_process_audio_s_per_s": (">=", THROUGHPUT_LIMIT)}  # fmt: skip
IN_PROCESS = (2, 1)  # workers x threads: the job lane on 2 cores (every worker, one core each, never solo)
PARAGRAPH_LINES = 5
BESIDE_MIN_CHARS = 30_000
BESIDE_PHASES = 2.0  # the beside job holds at least this many phases of work at the warm-up rate
START_SEGMENTS = 2  # a job's throughput is measured from the event where this many segments are done
SETTLE_S = 2.0  # after a cancelled job, for its segments already running to finish
RSS_SAMPLE_S = 1.0
PROGRESS_EVERY_S = 30.0
KEPT_RSS_SAMPLES = 100
MAX_REQUESTS = 100_000  # interactive load is bounded by time; this only keeps run_level's count bound out of the way
FINISHED = ("completed", "failed", "cancelled")
SAMPLE_ERRORS = 5
MIB = 2**20


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    phase_s: float
    long_chars: int
    seed: int


@dataclass(frozen=True, slots=True)
class Point:
    """A job's progress as the client saw it; `at_s` is the client's clock when it arrived."""

    at_s: float
    status: str
    segments_done: int
    segments_total: int
    chars_done: int
    chars_total: int
    audio_s: float

    @classmethod
    def of(cls, job: dict[str, Any]) -> Point:
        progress = job["progress"]
        return cls(time.perf_counter(), job["status"], progress["segments_done"], progress["segments_total"],
                   progress["chars_done"], progress["chars_total"], progress["audio_seconds"])  # fmt: skip

    @property
    def rendered(self) -> bool:
        return self.segments_done == self.segments_total

    @property
    def fraction(self) -> float:
        return self.chars_done / self.chars_total


@dataclass(frozen=True, slots=True)
class Window:
    """A job's progress between two points."""

    start: Point
    end: Point

    @property
    def wall_s(self) -> float:
        return self.end.at_s - self.start.at_s

    @property
    def audio_s_per_s(self) -> float:
        return _ratio(self.end.audio_s - self.start.audio_s, self.wall_s)

    @property
    def chars_per_s(self) -> float:
        return _ratio(self.end.chars_done - self.start.chars_done, self.wall_s)

    def figures(self) -> dict[str, object]:
        return {"wall_s": round(self.wall_s, 3), "audio_s": round(self.end.audio_s - self.start.audio_s, 3),
                "segments": self.end.segments_done - self.start.segments_done,
                "chars": self.end.chars_done - self.start.chars_done, "audio_s_per_s": round(self.audio_s_per_s, 4),
                "finished_before_the_end": self.end.status in FINISHED}  # fmt: skip


class JobsClient:
    """The jobs API as this benchmark uses it: books of plain text, voice alloy, wav."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = f"{url}/v1/audio/jobs"

    async def submit(self, text: str) -> str:
        body = {"input": text, "input_format": "text", "voice": "alloy", "response_format": "wav"}
        return _checked(await self.client.post(self.url, json=body), "submitting a job")["id"]

    async def point(self, job_id: str) -> Point:
        return Point.of(_checked(await self.client.get(f"{self.url}/{job_id}"), "reading a job"))

    async def points(self, job_id: str) -> AsyncIterator[Point]:
        """The job's progress events (SSE) as they arrive, to its final state. Lazy: the stream opens on iteration."""
        async with self.client.stream("GET", f"{self.url}/{job_id}/events") as reply:
            if reply.status_code != 200:
                await reply.aread()
                _checked(reply, "following a job")
            async for line in reply.aiter_lines():
                if line.startswith("data: "):
                    yield Point.of(json.loads(line.removeprefix("data: "))["job"])

    async def until(self, job_id: str, reached: Callable[[Point], bool]) -> Point:
        """The first progress event where `reached` holds; an error if the job ends before."""
        status = "without an event"
        async with contextlib.aclosing(self.points(job_id)) as points:
            async for point in points:
                if reached(point):
                    return point
                status = point.status
                if status in FINISHED:
                    break
        raise RuntimeError(f"job {job_id} ended ({status}) before it got there")

    async def window(self, job_id: str) -> Window:
        """From the event where `START_SEGMENTS` segments are done to the one where the last one is."""
        start = await self.until(job_id, lambda point: point.segments_done >= START_SEGMENTS)
        return Window(start, await self.until(job_id, lambda point: point.rendered))

    async def remove(self, job_id: str) -> None:
        """Cancel (a job that already ended answers 409) and delete."""
        reply = await self.client.post(f"{self.url}/{job_id}/cancel")
        if reply.status_code != 409:
            _checked(reply, "cancelling a job")
        _checked(await self.client.delete(f"{self.url}/{job_id}"), "deleting a job")


def _checked(reply: httpx.Response, doing: str) -> dict[str, Any]:
    if reply.status_code >= 300:
        raise RuntimeError(f"{doing}: HTTP {reply.status_code}: {reply.text[:200]}")
    return reply.json()


def book(texts: Sequence[str], min_chars: int) -> str:
    """The corpus, `PARAGRAPH_LINES` lines to a paragraph, repeated in whole passes to at least `min_chars`."""
    one_pass = "\n\n".join("\n".join(texts[start : start + PARAGRAPH_LINES])
                           for start in range(0, len(texts), PARAGRAPH_LINES))  # fmt: skip
    return "\n\n".join([one_pass] * max(1, math.ceil(min_chars / len(one_pass))))


def job_segments(text: str, max_segment_chars: int) -> list[str]:
    """The segments a job makes of `text`: each paragraph normalized and split, the first piece no shorter."""
    return [segment for chapter in parse_text(text, markdown=False) for paragraph in chapter.paragraphs
            for segment in segment_text(normalize_text(paragraph), first_segment_max_chars=max_segment_chars,
                                        max_segment_chars=max_segment_chars)]  # fmt: skip


@dataclass(slots=True)
class PhaseResult:
    """One phase of one round: interactive records (load phases), a job's window (beside and job phases) or the
    in-process throughput."""

    name: str
    wall_s: float
    records: list[RequestRecord] = field(default_factory=list)
    job: Window | None = None
    in_process_audio_s_per_s: float | None = None
    in_process_cpu_cores: float | None = None  # latency pass and saturation together
    server: ResourceUsage = field(default_factory=ResourceUsage)

    @property
    def throughput(self) -> float:
        return sum(record.audio_s for record in self.records if record.error is None) / self.wall_s

    @property
    def job_audio_s_per_s(self) -> float:
        return math.nan if self.job is None else self.job.audio_s_per_s

    def ttfa_s(self) -> list[float]:
        return [record.ttfa_s for record in self.records if record.error is None and record.ttfa_s is not None]

    def errors(self) -> list[str]:
        return [record.error for record in self.records if record.error is not None]

    def figures(self) -> dict[str, object]:
        figures: dict[str, object] = {"wall_s": round(self.wall_s, 3)}
        if self.name in LOAD_PHASES:
            concurrency = LOAD_PHASES[self.name][0]
            figures["interactive_audio_s_per_s"] = round(self.throughput, 3)
            figures["interactive"] = _rounded(asdict(summarize(concurrency, self.records, self.wall_s)))
            figures["ttfa_ms"] = [round(value * 1000, 1) for value in self.ttfa_s()]
        if self.job is not None:
            figures["job"] = self.job.figures()
        if self.in_process_audio_s_per_s is not None:
            figures["in_process_audio_s_per_s"] = round(self.in_process_audio_s_per_s, 4)
            figures["in_process_cpu_cores"] = _rounded(self.in_process_cpu_cores)
        figures["server"] = _rounded(asdict(self.server))
        return figures


@dataclass(frozen=True, slots=True)
class Sizes:
    """Job sizes, from the warm-up job's rate (characters per second alone on the server)."""

    warm_chars_per_s: float
    pass_chars: int
    throughput_passes: int
    beside_passes: int


class Bench:
    """The six phases and the long job against one server."""

    def __init__(self, url: str, server_pid: int, texts: list[str], options: Options, jobs: JobsClient) -> None:
        self.server_pid = server_pid
        self.options = options
        self.jobs = jobs
        self.corpus = texts
        self.settings: Settings = load_settings()
        self.target = Target(f"{url}/v1/audio/speech", response_format="pcm", stream=True,
                             headers={"Cache-Control": "no-store"})  # fmt: skip
        self.texts = random.Random(options.seed).sample(texts, len(texts))
        self.segments = job_segments(book(texts, 1), self.settings.max_segment_chars)
        self.sizes = Sizes(0.0, len(book(texts, 1)), 1, 1)

    async def warm_up(self) -> None:
        """Interactive requests, then one job of one pass to its end (the whole job path); its rate sizes the jobs."""
        await run_level(self.target, self.texts, 4, max_requests=8, max_duration_s=60)
        job_id = await self.jobs.submit(book(self.corpus, 1))
        try:
            rate = (await self.jobs.window(job_id)).chars_per_s
            await self.jobs.until(job_id, lambda point: point.status == "completed")
        finally:
            await self.jobs.remove(job_id)
        pass_s = self.sizes.pass_chars / rate
        beside = max(BESIDE_MIN_CHARS / self.sizes.pass_chars, BESIDE_PHASES * self.options.phase_s / pass_s)
        self.sizes = Sizes(rate, self.sizes.pass_chars, max(1, round(self.options.phase_s / pass_s)), math.ceil(beside))

    async def run(self, phase: str) -> PhaseResult:
        if phase == "in_process":
            return await self._in_process()
        if phase == "job":
            return await self._job()
        if LOAD_PHASES[phase][1]:
            return await self._beside(phase)
        return await self._load(phase)

    async def _load(self, phase: str) -> PhaseResult:
        probe = ProcessProbe(self.server_pid)
        probe.start()
        records, wall_s = await run_level(self.target, self.texts, LOAD_PHASES[phase][0], max_requests=MAX_REQUESTS,
                                          max_duration_s=self.options.phase_s)  # fmt: skip
        return PhaseResult(phase, wall_s, records, server=probe.stop())

    async def _beside(self, phase: str) -> PhaseResult:
        job_id = await self.jobs.submit(book(self.corpus, self.sizes.beside_passes * self.sizes.pass_chars))
        try:
            before = await self.jobs.until(job_id, lambda point: point.segments_done >= 1)
            result = await self._load(phase)
            result.job = Window(before, await self.jobs.point(job_id))
        finally:
            await self.jobs.remove(job_id)
            await asyncio.sleep(SETTLE_S)
        return result

    async def _in_process(self) -> PhaseResult:
        # The server is this process's child, so the engine's CPU here is the whole tree's less the server's
        # (which should be idle: a busy server or a starved engine shows here, not in the ratio).
        server, tree = ProcessProbe(self.server_pid), ProcessProbe(os.getpid())
        server.start()
        tree.start()
        started = time.perf_counter()
        [result] = await asyncio.to_thread(run_in_process, self.settings, self.segments, [IN_PROCESS])
        phase = PhaseResult("in_process", time.perf_counter() - started, server=server.stop(),
                            in_process_audio_s_per_s=result.audio_s_per_wall_s)  # fmt: skip
        whole = tree.stop()
        if whole.cpu_cores is not None and phase.server.cpu_cores is not None:
            phase.in_process_cpu_cores = whole.cpu_cores - phase.server.cpu_cores
        return phase

    async def _job(self) -> PhaseResult:
        probe = ProcessProbe(self.server_pid)
        probe.start()
        started = time.perf_counter()
        job_id = await self.jobs.submit(book(self.corpus, self.sizes.throughput_passes * self.sizes.pass_chars))
        try:
            window = await self.jobs.window(job_id)
            server = probe.stop()
            await self.jobs.until(job_id, lambda point: point.status == "completed")
        finally:
            await self.jobs.remove(job_id)
        return PhaseResult("job", time.perf_counter() - started, job=window, server=server)

    async def long_job(self, console: Console) -> LongJob | None:
        """Part 3: one job of `--long-chars` characters, server RSS sampled every second until it completes."""
        if self.options.long_chars <= 0:
            return None
        text = book(self.corpus, self.options.long_chars)
        console.print(f"part 3, once: a {len(text)}-character job, RSS every {RSS_SAMPLE_S:g} s (about "
                      f"{len(text) / self.sizes.warm_chars_per_s / 60:.0f} min at the warm-up rate)")  # fmt: skip
        job_id = await self.jobs.submit(text)
        started = last_line = time.perf_counter()
        samples: list[RssSample] = []
        try:
            while True:
                point = await self.jobs.point(job_id)
                samples.append(RssSample(point.at_s - started, point.fraction, rss_bytes(self.server_pid)))
                if point.status in FINISHED:
                    break
                if point.at_s - last_line >= PROGRESS_EVERY_S:
                    last_line = point.at_s
                    console.print(f"long job: {point.at_s - started:.0f} s, {point.chars_done}/{point.chars_total} "
                                  f"chars, RSS {samples[-1].rss_bytes / MIB:.0f} MiB")  # fmt: skip
                await asyncio.sleep(max(0.0, started + len(samples) * RSS_SAMPLE_S - time.perf_counter()))
        finally:
            await self.jobs.remove(job_id)
        if point.status != "completed":
            raise RuntimeError(f"the long job ended {point.status}")
        return LongJob(point.chars_total, point.segments_total, point.at_s - started, point.audio_s, samples)


def rss_bytes(pid: int) -> int:
    """Resident memory now (VmRSS), from /proc."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@dataclass(frozen=True, slots=True)
class RssSample:
    at_s: float
    fraction: float  # of the job's characters done
    rss_bytes: int


@dataclass(frozen=True, slots=True)
class LongJob:
    """Part 3's job: its size and rate, and the server's RSS while it rendered and was assembled."""

    chars: int
    segments: int
    wall_s: float
    audio_s: float
    samples: list[RssSample]

    def peak(self, second_half: bool) -> int:
        return max((sample.rss_bytes for sample in self.samples if (sample.fraction >= 0.5) == second_half),
                   default=0)  # fmt: skip

    @property
    def ratio(self) -> float:
        return _ratio(self.peak(True), self.peak(False))

    def figures(self) -> dict[str, object]:
        at_10 = next(sample for sample in self.samples if sample.fraction >= 0.1)
        step = max(1, math.ceil(len(self.samples) / KEPT_RSS_SAMPLES))
        rss = {"start": self.samples[0].rss_bytes, "at_10_percent": at_10.rss_bytes, "end": self.samples[-1].rss_bytes,
               "peak": max(sample.rss_bytes for sample in self.samples), "peak_first_half": self.peak(False),
               "peak_second_half": self.peak(True)}  # fmt: skip
        return {
            "chars": self.chars, "segments": self.segments, "wall_s": round(self.wall_s, 1),
            "audio_s": round(self.audio_s, 1), "chars_per_s": round(self.chars / self.wall_s, 1),
            "rss_mib": {name: round(value / MIB, 1) for name, value in rss.items()},
            "peak_second_half_vs_first_half": round(self.ratio, 4),
            "samples_s_fraction_rss_mib": [[round(sample.at_s, 1), round(sample.fraction, 4),
                                            round(sample.rss_bytes / MIB, 1)] for sample in self.samples[::step]],
        }  # fmt: skip


async def measure(
    url: str, pid: int, texts: list[str], options: Options, console: Console
) -> tuple[Bench, list[dict[str, PhaseResult]], LongJob | None]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0)) as client:
        bench = Bench(url, pid, texts, options, JobsClient(client, url))
        await bench.warm_up()
        console.print(f"warm-up job: {bench.sizes.warm_chars_per_s:.0f} chars/s; a pass is "
                      f"{bench.sizes.pass_chars} chars, {len(bench.segments)} segments; job phase "
                      f"{bench.sizes.throughput_passes} pass(es), beside jobs {bench.sizes.beside_passes}")  # fmt: skip
        rounds = await alternating_rounds(options.rounds, PHASES, bench.run, _phase_line, console)
        return bench, rounds, await bench.long_job(console)


def _phase_line(result: PhaseResult) -> str:
    line = f"{result.wall_s:.1f} s"
    ttfa = {name: value * 1000 for name, value in percentiles(result.ttfa_s()).items()}
    if result.records:
        line += f", {len(result.records)} requests, {result.throughput:.2f} audio-s/s"
    if ttfa:
        line += f", TTFA p50 {ttfa['p50']:.0f} / p95 {ttfa['p95']:.0f} ms"
    if result.job is not None:
        line += f"; job {result.job.audio_s_per_s:.2f} audio-s/s over {result.job.wall_s:.1f} s"
    if result.in_process_audio_s_per_s is not None:
        line += f"; in-process {result.in_process_audio_s_per_s:.2f} audio-s/s"
    if result.server.cpu_cores is not None:
        line += f"; server {result.server.cpu_cores:.2f} cores"
    return line


def round_ratios(phases: dict[str, PhaseResult]) -> dict[str, float]:
    ratios = {}
    for level in ("c1", "c4"):
        alone, beside = phases[f"{level}_alone"], phases[f"{level}_beside"]
        ratios[f"ttfa_p95_{level}_beside_vs_alone"] = _ratio(_p95(beside.ttfa_s()), _p95(alone.ttfa_s()))
        ratios[f"ttfa_p50_{level}_beside_vs_alone"] = _ratio(_p50(beside.ttfa_s()), _p50(alone.ttfa_s()))
        ratios[f"interactive_audio_s_per_s_{level}_beside_vs_alone"] = _ratio(beside.throughput, alone.throughput)
    limit = phases["in_process"].in_process_audio_s_per_s or math.nan
    ratios["job_vs_in_process_audio_s_per_s"] = _ratio(phases["job"].job_audio_s_per_s, limit)
    return ratios


def judged(values: Sequence[float], bound: str, limit: float) -> dict[str, object]:
    """Judged on the median over rounds; `met_every_round` is the stricter reading (NaN meets nothing)."""

    def meets(value: float) -> bool:
        return value <= limit if bound == "<=" else value >= limit

    median = statistics.median(values)
    return {"limit": f"{bound} {limit}", "median": round(median, 4), "met": meets(median),
            "met_every_round": all(meets(value) for value in values)}  # fmt: skip


def pooled_ttfa(rounds: list[dict[str, PhaseResult]]) -> dict[str, dict[str, float]]:
    """Interactive TTFA over every round's samples together, per load phase."""
    pooled: dict[str, dict[str, float]] = {}
    for phase in LOAD_PHASES:
        values = [value for phases in rounds for value in phases[phase].ttfa_s()]
        pooled[phase] = {name: round(value * 1000, 1) for name, value in percentiles(values).items()}
        pooled[phase]["n"] = len(values)
    return pooled


def over_rounds(
    rounds: list[dict[str, PhaseResult]], phases: Iterable[str], value: Callable[[PhaseResult], float]
) -> dict[str, dict[str, object]]:
    """Each phase's `value`: median, min, max and per round."""
    return {phase: spread([value(results[phase]) for results in rounds]) for phase in phases}


def errors(rounds: list[dict[str, PhaseResult]]) -> dict[str, object]:
    counts = {phase: sum(len(phases[phase].errors()) for phases in rounds) for phase in LOAD_PHASES}
    messages = [message for phases in rounds for result in phases.values() for message in result.errors()]
    return {**counts, "samples": list(dict.fromkeys(messages))[:SAMPLE_ERRORS]}


def build_report(bench: Bench, rounds: list[dict[str, PhaseResult]], long_job: LongJob | None,
                 load_average: tuple[tuple[float, ...], tuple[float, ...]]) -> dict[str, Any]:  # fmt: skip
    ratios = ratios_by_name([round_ratios(phases) for phases in rounds])
    targets = {name: judged(ratios[name], *bound) for name, bound in TARGETS.items()}
    if long_job is not None:
        targets["long_job_rss_peak_second_half_vs_first_half"] = {**judged([long_job.ratio], "<=", RSS_LIMIT),
                                                                  "note": "one job, once per run"}  # fmt: skip
    return {
        **report_header("jobs_lane", bench.corpus, load_average),
        "setup": {
            "server": "voxserve serve, default settings, bundled voice, no API keys, temporary VOXSERVE_DATA_DIR",
            "interactive": "streamed pcm (24 kHz s16le), voice alloy, Cache-Control: no-store, closed loop",
            "jobs": f"JSON input (text), voice alloy, wav; the corpus {PARAGRAPH_LINES} lines to a paragraph, in "
            "whole passes",
            "in_process": f"run_in_process {IN_PROCESS[0]} workers x {IN_PROCESS[1]} thread on one pass of the "
            f"job's segments ({len(bench.segments)}, max_segment_chars {bench.settings.max_segment_chars})",
            "job_window": f"from the SSE event with segments_done >= {START_SEGMENTS} to the one with every segment "
            "done",
            "long_job": "runs once after the rounds; VmRSS of the server pid every second until completed",
            "sizes": _rounded(asdict(bench.sizes)),
            **asdict(bench.options),
        },
        "targets": targets,
        "ratios": {name: spread(values) for name, values in ratios.items()},
        "ttfa_ms_pooled": pooled_ttfa(rounds),
        "interactive_audio_s_per_s": over_rounds(rounds, LOAD_PHASES, lambda result: result.throughput),
        "job_audio_s_per_s": over_rounds(rounds, JOB_PHASES, lambda result: result.job_audio_s_per_s),
        "in_process_audio_s_per_s": over_rounds(
            rounds, ["in_process"], lambda result: result.in_process_audio_s_per_s or math.nan
        )["in_process"],
        "long_job": None if long_job is None else long_job.figures(),
        "errors": errors(rounds),
        "rounds": [{phase: result.figures() for phase, result in phases.items()} for phases in rounds],
    }


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title="jobs lane: ratios within this run (median, min, max over rounds)")
    for column in ("ratio", "median", "min", "max", "target", ""):
        table.add_column(column, justify="right")
    for name, values in report["ratios"].items():
        goal = report["targets"].get(name)
        verdict = "" if goal is None else ("met" if goal["met"] else "NOT met")
        table.add_row(name, *(f"{values[key]:.2f}" for key in ("median", "min", "max")),
                      goal["limit"] if goal else "context", verdict)  # fmt: skip
    console.print(table)
    phases = Table(title="per phase (medians over rounds; TTFA pooled over rounds)")
    for column in ("phase", "interactive audio-s/s", "TTFA p50 / p95 ms (n)", "job audio-s/s", "errors"):
        phases.add_column(column, justify="right")
    for phase, ttfa in report["ttfa_ms_pooled"].items():
        job = report["job_audio_s_per_s"].get(phase)
        phases.add_row(phase, f"{report['interactive_audio_s_per_s'][phase]['median']:.2f}",
                       f"{ttfa.get('p50', math.nan):.0f} / {ttfa.get('p95', math.nan):.0f} ({ttfa['n']})",
                       "" if job is None else f"{job['median']:.2f}", str(report["errors"][phase]))  # fmt: skip
    phases.add_row("job", "", "", f"{report['job_audio_s_per_s']['job']['median']:.2f}", "")
    phases.add_row("in_process", "", "", f"{report['in_process_audio_s_per_s']['median']:.2f}", "")
    console.print(phases)
    _render_long_job(report, console)


def _render_long_job(report: dict[str, Any], console: Console) -> None:
    long_job = report["long_job"]
    if long_job is None:
        console.print("long job: skipped (--long-chars 0)")
        return
    rss, goal = long_job["rss_mib"], report["targets"]["long_job_rss_peak_second_half_vs_first_half"]
    console.print(f"long job (once): {long_job['chars']} chars, {long_job['segments']} segments, "
                  f"{long_job['wall_s']:.0f} s, {long_job['chars_per_s']:.0f} chars/s; RSS MiB at 10% "
                  f"{rss['at_10_percent']:.0f}, end {rss['end']:.0f}, peak {rss['peak']:.0f} (first half "
                  f"{rss['peak_first_half']:.0f}, second {rss['peak_second_half']:.0f}): "
                  f"{long_job['peak_second_half_vs_first_half']:.3f} {goal['limit']}, "
                  f"{'met' if goal['met'] else 'NOT met'}")  # fmt: skip


def parse_args() -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase-s", type=float, default=30.0, help="how long each interactive phase sends")
    parser.add_argument("--long-chars", type=int, default=100_000,
                        help="part 3's job size (rounded up to whole corpus passes); 0 skips part 3")  # fmt: skip
    parser.add_argument("--seed", type=int, default=7, help="the shuffle of the corpus for interactive load")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON report here")
    args = parser.parse_args()
    if args.rounds < 1 or args.phase_s <= 0 or args.long_chars < 0:
        parser.error("need --rounds >= 1, --phase-s > 0 and --long-chars >= 0")
    return Options(args.rounds, args.phase_s, args.long_chars, args.seed), args.output


def main() -> None:
    options, output = parse_args()
    try:
        texts = load_corpus(CORPUS)
    except ConfigError as exc:
        sys.exit(f"jobs_lane: {exc.message}")
    console = Console(width=140)
    load_start = os.getloadavg()
    with temporary_server("voxserve-jobs-lane-") as (process, url):
        bench, rounds, long_job = asyncio.run(measure(url, process.pid, texts, options, console))
    report = build_report(bench, rounds, long_job, (load_start, os.getloadavg()))
    render(report, console)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
