"""Conversion isolation: speech's first audio at c=4 while four long voice conversions run beside it.

Target (the issue's words): speech TTFA p95 at c=4 while 4 long conversions run stays <= 1.5 x its value with no
conversions.

One server on 127.0.0.1 (bundled voice, default settings, no API keys: a loopback server without keys is open).
Speech is streamed 24 kHz PCM, texts from benchmarks/corpus.txt, audio cache bypassed with `Cache-Control:
no-store`. The conversion source is one long recording (about 60 s) that the server itself speaks at the start.
Each round runs two phases:

- alone: 4 closed-loop speech streams for `--phase-s` -> TTFA, throughput (audio seconds per wall second);
- with_conversions: the same speech load while 4 clients each keep one conversion of the source running back to
  back (voice `alloy` or `en_US-joe-medium`, streamed or buffered: one client per combination). The server runs
  `max_concurrent_conversions` (default 2) at once and refuses more with 429: those are expected, counted apart
  from errors, and retried after Retry-After (at most 1 s). When speech stops, conversions stop starting, and the
  ones in flight finish before the next phase.

Ratio per round: speech TTFA p95 with_conversions / alone; the target is judged on the median over rounds. Rounds
alternate the phase order (odd rounds run it backwards), so slow drift on this shared machine falls on both
phases; only ratios within the run are meant to be read.

    .venv/bin/python benchmarks/conversion_isolation.py -o docs/bench/conversion_isolation.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fair_share import CORPUS, _p95, _rounded, alternating_rounds, ratios_by_name, report_header, spread
from local_server import temporary_server
from rich.console import Console
from rich.table import Table

from voxserve.audio.decode import decode_audio
from voxserve.bench.corpus import load_corpus
from voxserve.bench.load import Target, run_level
from voxserve.bench.probe import ProcessProbe
from voxserve.bench.records import RequestRecord, ResourceUsage, percentiles, summarize
from voxserve.errors import ConfigError, VoxError

SPEECH_STREAMS = 4
MAX_SPEECH_REQUESTS = 100_000  # speech is bounded by time; this only keeps run_level's count bound out of the way
CONVERSION_VOICES = ("alloy", "en_US-joe-medium")  # OpenAI's name for the default voice, and that voice's id
# One conversion client per combination, so every path (alias or voice id, streamed or buffered) carries load.
CONVERSION_CLIENTS = tuple(itertools.product(CONVERSION_VOICES, (True, False)))
CONVERSION_FORMAT = "pcm"
TTFA_P95_LIMIT = 1.5  # speech TTFA p95 with conversions / alone, at most
PHASES = ("alone", "with_conversions")
SOURCE_CHARS = 1200  # about 60 s with the bundled voice (~19 characters a second); under max_input_chars (4096)
# A 429's Retry-After is whole seconds, at least 1, estimated from the mean hold; a slot often frees sooner, and a
# client sleeping past that leaves it empty, which would lighten the very load this benchmark puts on speech.
MAX_RETRY_PAUSE_S = 1.0
# A converted recording is as long as its source; a shorter one was cut off mid-stream.
LENGTH_TOLERANCE_S = 0.1
SERVER_CONFIG_KEYS = ("max_concurrent_conversions", "conversion_threads", "conversion_niceness", "conversion_window_s",
                      "max_source_s", "max_input_chars", "request_timeout_s", "workers")  # fmt: skip
SAMPLE_ERRORS = 5


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    phase_s: float
    seed: int


@dataclass(frozen=True, slots=True)
class Source:
    """The recording every conversion converts, as the server spoke it."""

    wav: bytes
    text_chars: int
    audio_s: float


@dataclass(slots=True)
class ConversionRecord:
    """One conversion request. `latency_s` runs to the last byte; `audio_s` is decoded from the response."""

    voice: str
    stream: bool
    status: int = 0
    latency_s: float = 0.0
    audio_s: float = 0.0
    error: str | None = None
    retry_after_s: float | None = None  # the server's Retry-After, on a 429

    @property
    def rtf(self) -> float:
        """Seconds of processing per second of audio converted."""
        return self.latency_s / self.audio_s


@dataclass(slots=True)
class ConversionLoad:
    """What the conversion clients got in one phase: 429s are counted (expected), everything else recorded."""

    records: list[ConversionRecord] = field(default_factory=list)
    refused: int = 0

    def completed(self) -> list[ConversionRecord]:
        return [record for record in self.records if record.error is None]

    def errors(self) -> list[str]:
        return [record.error for record in self.records if record.error is not None]


@dataclass(slots=True)
class PhaseResult:
    """One phase of one round. `wall_s` is the speech load's; server CPU is measured over the same span."""

    wall_s: float
    speech: list[RequestRecord]
    conversions: ConversionLoad
    server: ResourceUsage = field(default_factory=ResourceUsage)
    client_cpu_cores: float | None = None

    @property
    def speech_throughput(self) -> float:
        return sum(record.audio_s for record in self.speech if record.error is None) / self.wall_s

    def ttfa_s(self) -> list[float]:
        return [record.ttfa_s for record in self.speech if record.error is None and record.ttfa_s is not None]

    def speech_errors(self) -> list[str]:
        return [record.error for record in self.speech if record.error is not None]

    def figures(self) -> dict[str, object]:
        """What the report keeps: the speech summary and TTFA samples, the conversions, resource use."""
        completed = self.conversions.completed()
        return {
            "wall_s": round(self.wall_s, 3),
            "speech_audio_s_per_s": round(self.speech_throughput, 3),
            "speech": _rounded(asdict(summarize(SPEECH_STREAMS, self.speech, self.wall_s))),
            "speech_ttfa_ms": [round(value * 1000, 1) for value in self.ttfa_s()],
            "conversions": {
                "completed": len(completed),
                "refused_429": self.conversions.refused,
                "errors": len(self.conversions.errors()),
                "rtf": [round(record.rtf, 4) for record in completed],
                "latency_s": [round(record.latency_s, 3) for record in completed],
            },
            "server": _rounded(asdict(self.server)),
            "client_cpu_cores": _rounded(self.client_cpu_cores),
        }


class Bench:
    """The two phases against one server; speech texts are a fixed shuffle of the corpus."""

    def __init__(self, url: str, server_pid: int, texts: list[str], options: Options) -> None:
        self.url = url
        self.server_pid = server_pid
        self.options = options
        headers = {"Cache-Control": "no-store"}
        self.speech = Target(f"{url}/v1/audio/speech", response_format="pcm", stream=True, headers=headers)
        self.texts = random.Random(options.seed).sample(texts, len(texts))
        self.source_text = source_text(texts)
        self.server_config: dict[str, Any] = {}
        self.source: Source | None = None

    async def set_up(self) -> None:
        """Read the limits in force, have the server speak the source, and warm speech and both voices up."""
        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0)) as client:
            reply = await client.get(f"{self.url}/diagnostics/performance")
            reply.raise_for_status()
            config = reply.json()["config"]
            self.server_config = {key: config[key] for key in SERVER_CONFIG_KEYS}
            self.source = await self._speak_source(client)
            await run_level(self.speech, self.texts, SPEECH_STREAMS, max_requests=SPEECH_STREAMS, max_duration_s=60)
            for voice in CONVERSION_VOICES:
                record = await self._convert(client, voice, stream=True)
                if record.error is not None:
                    raise RuntimeError(f"warm-up conversion to {voice} failed: {record.error}")

    async def _speak_source(self, client: httpx.AsyncClient) -> Source:
        if len(self.source_text) > self.server_config["max_input_chars"]:
            raise RuntimeError(f"the source text ({len(self.source_text)} chars) is past the server's max_input_chars")
        body = {"model": "tts-1", "input": self.source_text, "voice": "alloy", "response_format": "wav",
                "stream": False}  # fmt: skip
        reply = await client.post(self.speech.url, json=body, headers=self.speech.headers)
        if reply.status_code != 200:
            raise RuntimeError(f"speaking the source failed: HTTP {reply.status_code}: {reply.text[:200]}")
        audio_s = decode_audio(reply.content, reply.headers.get("content-type", "")).duration_s
        if audio_s > self.server_config["max_source_s"]:
            raise RuntimeError(f"the source is {audio_s:.1f} s, past the server's max_source_s")
        return Source(reply.content, len(self.source_text), audio_s)

    async def run(self, phase: str) -> PhaseResult:
        conversions = ConversionLoad()
        speech_done = asyncio.Event()
        limits = httpx.Limits(max_connections=len(CONVERSION_CLIENTS))
        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits) as client:
            loops = [self._convert_back_to_back(client, voice, stream, speech_done, conversions)
                     for voice, stream in CONVERSION_CLIENTS] if phase == "with_conversions" else []  # fmt: skip
            # The server is this process's child, so the client's own CPU is the whole tree's less the server's.
            server, tree = ProcessProbe(self.server_pid), ProcessProbe(os.getpid())
            server.start()
            tree.start()
            converting = asyncio.gather(*loops)
            try:
                speech, wall_s = await run_level(self.speech, self.texts, SPEECH_STREAMS,
                                                 max_requests=MAX_SPEECH_REQUESTS,
                                                 max_duration_s=self.options.phase_s)  # fmt: skip
                result = PhaseResult(wall_s, speech, conversions)
                result.server, whole = server.stop(), tree.stop()
            finally:
                speech_done.set()
                # Conversions still in flight finish here, so none of them runs into the next phase.
                await converting
        if whole.cpu_cores is not None and result.server.cpu_cores is not None:
            result.client_cpu_cores = whole.cpu_cores - result.server.cpu_cores
        return result

    async def _convert_back_to_back(
        self, client: httpx.AsyncClient, voice: str, stream: bool, speech_done: asyncio.Event, load: ConversionLoad
    ) -> None:
        while not speech_done.is_set():
            record = await self._convert(client, voice, stream)
            if record.status == 429:
                load.refused += 1
                await asyncio.sleep(min(record.retry_after_s or MAX_RETRY_PAUSE_S, MAX_RETRY_PAUSE_S))
                continue
            load.records.append(record)
            if record.error is not None:
                # A pause, so a server that fails fast is not hammered into thousands of identical errors.
                await asyncio.sleep(MAX_RETRY_PAUSE_S)

    async def _convert(self, client: httpx.AsyncClient, voice: str, stream: bool) -> ConversionRecord:
        assert self.source is not None
        record = ConversionRecord(voice, stream)
        fields = {"voice": voice, "stream": str(stream).lower(), "response_format": CONVERSION_FORMAT}
        started = time.perf_counter()
        try:
            reply = await client.post(f"{self.url}/v1/audio/conversions", data=fields,
                                      files={"file": ("source.wav", self.source.wav, "audio/wav")})  # fmt: skip
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            return record
        record.latency_s = time.perf_counter() - started
        record.status = reply.status_code
        if reply.status_code != 200:
            record.error = f"HTTP {reply.status_code}: {reply.text[:200]}"
            if reply.status_code == 429:
                record.retry_after_s = _header_seconds(reply.headers.get("retry-after"))
            return record
        try:
            record.audio_s = decode_audio(reply.content, reply.headers.get("content-type", "")).duration_s
        except VoxError as exc:
            record.error = f"undecodable response: {exc.message}"
            return record
        if abs(record.audio_s - self.source.audio_s) > LENGTH_TOLERANCE_S:
            record.error = f"{record.audio_s:.2f} s converted from a {self.source.audio_s:.2f} s source"
        return record


def source_text(texts: Sequence[str]) -> str:
    """Corpus lines in order, each one that still fits under SOURCE_CHARS, joined into one passage."""
    chosen: list[str] = []
    length = 0
    for text in texts:
        if length + len(text) + 1 <= SOURCE_CHARS:
            chosen.append(text)
            length += len(text) + 1
    return " ".join(chosen)


def _header_seconds(header: str | None) -> float | None:
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None


def _ratio(numerator: float, denominator: float) -> float:
    """NaN where the denominator is zero (a phase with no successful speech), so the target then fails."""
    return numerator / denominator if denominator else float("nan")


def _p50(values: Sequence[float]) -> float:
    return percentiles(values).get("p50", float("nan"))


def round_ratios(phases: dict[str, PhaseResult]) -> dict[str, float]:
    alone, loaded = phases["alone"], phases["with_conversions"]
    return {
        "speech_ttfa_p95_with_conversions_vs_alone": _ratio(_p95(loaded.ttfa_s()), _p95(alone.ttfa_s())),
        "speech_ttfa_p50_with_conversions_vs_alone": _ratio(_p50(loaded.ttfa_s()), _p50(alone.ttfa_s())),
        "speech_throughput_with_conversions_vs_alone": _ratio(loaded.speech_throughput, alone.speech_throughput),
    }


def target(ttfa_p95_ratios: Sequence[float]) -> dict[str, object]:
    """Judged on the median over rounds; `met_every_round` is the stricter reading."""
    median = statistics.median(ttfa_p95_ratios)
    return {"limit": TTFA_P95_LIMIT, "median": round(median, 4), "met": median <= TTFA_P95_LIMIT,
            "met_every_round": all(ratio <= TTFA_P95_LIMIT for ratio in ttfa_p95_ratios)}  # fmt: skip


def pooled_ttfa(rounds: list[dict[str, PhaseResult]]) -> dict[str, dict[str, float]]:
    """Speech TTFA over every round's samples together, per phase: steadier than one round's p95."""
    pooled: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        values = [value for phases in rounds for value in phases[phase].ttfa_s()]
        pooled[phase] = {name: round(value * 1000, 1) for name, value in percentiles(values).items()}
        pooled[phase]["n"] = len(values)
    return pooled


def conversion_totals(rounds: list[dict[str, PhaseResult]]) -> dict[str, object]:
    loads = [phases["with_conversions"].conversions for phases in rounds]
    completed = [record for load in loads for record in load.completed()]
    # Per client: the server's slots should go round, not stay with whichever clients got them first.
    by_client = {_client_name(voice, stream): 0 for voice, stream in CONVERSION_CLIENTS}
    for record in completed:
        by_client[_client_name(record.voice, record.stream)] += 1
    return {
        "completed": len(completed),
        "completed_by_client": by_client,
        "refused_429": sum(load.refused for load in loads),
        "errors": sum(len(load.errors()) for load in loads),
        "rtf": {name: round(value, 4) for name, value in percentiles([record.rtf for record in completed]).items()},
    }


def _client_name(voice: str, stream: bool) -> str:
    return f"{voice}/{'streamed' if stream else 'buffered'}"


def errors(rounds: list[dict[str, PhaseResult]]) -> dict[str, object]:
    """Counts per phase and kind (429s for conversions are not errors), and a few distinct messages."""
    counts = {phase: {"speech": sum(len(phases[phase].speech_errors()) for phases in rounds),
                      "conversion": sum(len(phases[phase].conversions.errors()) for phases in rounds)}
              for phase in PHASES}  # fmt: skip
    messages = [message for phases in rounds for result in phases.values()
                for message in (*result.speech_errors(), *result.conversions.errors())]  # fmt: skip
    return {**counts, "samples": list(dict.fromkeys(messages))[:SAMPLE_ERRORS]}


async def measure(bench: Bench, console: Console) -> list[dict[str, PhaseResult]]:
    await bench.set_up()
    assert bench.source is not None
    console.print(f"source: {bench.source.text_chars} chars, {bench.source.audio_s:.1f} s; "
                  f"server: {bench.server_config}")  # fmt: skip
    return await alternating_rounds(bench.options.rounds, PHASES, bench.run, _phase_line, console)


def _phase_line(result: PhaseResult) -> str:
    ttfa = {name: value * 1000 for name, value in percentiles(result.ttfa_s()).items()}
    line = f"{result.wall_s:.1f} s, speech {len(result.speech)} requests, {result.speech_throughput:.2f} audio-s/s"
    if ttfa:
        line += f", TTFA p50 {ttfa['p50']:.0f} / p95 {ttfa['p95']:.0f} ms"
    if result.conversions.records or result.conversions.refused:
        line += (f"; conversions {len(result.conversions.completed())} completed, "
                 f"{result.conversions.refused} refused (429)")  # fmt: skip
    if result.server.cpu_cores is not None:
        line += f"; server {result.server.cpu_cores:.2f} cores"
    return line


def build_report(bench: Bench, rounds: list[dict[str, PhaseResult]], texts: list[str],
                 load_average: tuple[tuple[float, ...], tuple[float, ...]]) -> dict[str, Any]:  # fmt: skip
    assert bench.source is not None
    ratios = ratios_by_name([round_ratios(phases) for phases in rounds])
    return {
        **report_header("conversion_isolation", texts, load_average),
        "setup": {
            "server": "voxserve serve, default settings, bundled voice, no API keys (open on loopback)",
            "server_config": bench.server_config,
            "speech": "streamed pcm (24 kHz s16le), voice alloy, Cache-Control: no-store",
            "speech_streams": SPEECH_STREAMS,
            "conversions": f"multipart file = the source (wav), response_format {CONVERSION_FORMAT}; 429 counted "
            f"apart and retried after Retry-After (at most {MAX_RETRY_PAUSE_S:g} s)",
            "conversion_clients": [_client_name(voice, stream) for voice, stream in CONVERSION_CLIENTS],
            "source": {"text_chars": bench.source.text_chars, "audio_s": round(bench.source.audio_s, 2)},
            **asdict(bench.options),
        },
        "target": target(ratios["speech_ttfa_p95_with_conversions_vs_alone"]),
        "ratios": {name: spread(values) for name, values in ratios.items()},
        "speech_ttfa_ms_pooled": pooled_ttfa(rounds),
        "speech_audio_s_per_s": {
            phase: spread([phases[phase].speech_throughput for phases in rounds]) for phase in PHASES
        },
        "conversions": conversion_totals(rounds),
        "errors": errors(rounds),
        "rounds": [{phase: result.figures() for phase, result in phases.items()} for phases in rounds],
    }


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title="conversion isolation: speech at c=4 beside 4 long conversions (ratios within this run)")
    for column in ("ratio", "median", "min", "max", "target", ""):
        table.add_column(column, justify="right")
    goal = report["target"]
    for name, values in report["ratios"].items():
        judged = name == "speech_ttfa_p95_with_conversions_vs_alone"
        limit = f"<= {goal['limit']}" if judged else "context"
        verdict = ("met" if goal["met"] else "NOT met") if judged else ""
        table.add_row(name, *(f"{values[key]:.2f}" for key in ("median", "min", "max")), limit, verdict)
    console.print(table)
    pooled = report["speech_ttfa_ms_pooled"]
    line = ", ".join(f"{phase} {ms['p50']:.0f} / {ms['p95']:.0f} (n={ms['n']})" for phase, ms in pooled.items())
    console.print(f"speech TTFA p50 / p95 ms, all rounds pooled: {line}")
    medians = {phase: values["median"] for phase, values in report["speech_audio_s_per_s"].items()}
    throughput = ", ".join(f"{phase} {median:.2f}" for phase, median in medians.items())
    console.print(f"speech audio-s/s (median over rounds): {throughput}")
    totals = report["conversions"]
    rtf = f", RTF p50 {totals['rtf']['p50']:.3f}" if totals["rtf"] else ""
    console.print(f"conversions: {totals['completed']} completed, {totals['refused_429']} refused (429), "
                  f"{totals['errors']} errors{rtf}")  # fmt: skip
    counts = {phase: report["errors"][phase] for phase in PHASES}
    if any(sum(kinds.values()) for kinds in counts.values()):
        console.print(f"[red]errors: {counts}; e.g. {report['errors']['samples']}[/red]")


def parse_args() -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase-s", type=float, default=25.0, help="how long speech is sent in each phase")
    parser.add_argument("--seed", type=int, default=7, help="the shuffle of the corpus for speech")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON report here")
    args = parser.parse_args()
    if args.rounds < 1 or args.phase_s <= 0:
        parser.error("need --rounds >= 1 and --phase-s > 0")
    return Options(args.rounds, args.phase_s, args.seed), args.output


def main() -> None:
    options, output = parse_args()
    try:
        texts = load_corpus(CORPUS)
    except ConfigError as exc:
        sys.exit(f"conversion_isolation: {exc.message}")
    console = Console(width=120)
    load_start = os.getloadavg()
    with temporary_server("voxserve-conversion-isolation-") as (process, url):
        bench = Bench(url, process.pid, texts, options)
        rounds = asyncio.run(measure(bench, console))
    report = build_report(bench, rounds, texts, (load_start, os.getloadavg()))
    render(report, console)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
