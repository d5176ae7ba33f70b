"""Fair share between API keys: key B sends one request at a time while key A keeps 16 streams busy.

Targets (the issue's words): B's TTFA p95 stays <= 1.5 x its value on an idle server, and A still gets the rest of
the machine (total throughput >= 0.95 x the single-key figure of the same run).

One server on 127.0.0.1 (bundled voice, default settings, two bootstrap keys, audio cache bypassed with
`Cache-Control: no-store`), streamed 24 kHz PCM, texts from benchmarks/corpus.txt. Each round runs four phases:

- idle: B alone, sequential requests -> B's TTFA;
- single: A alone, 16 concurrent streams -> throughput (audio seconds per wall second);
- mixed: A's 16 streams, and B sequential from `--ramp-s` in -> B's TTFA, total, A's and B's throughput;
- same_key: as mixed, but B sends A's key, so no fair share is possible between them (context: what it buys).

Rounds alternate the phase order (odd rounds run it backwards), so slow drift on this shared machine falls on
every phase; only ratios within the run are meant to be read. Every phase is bounded by `--phase-s` and B by the
corpus length.

    .venv/bin/python benchmarks/fair_share.py [--rounds 3] [--phase-s 25] -o docs/bench/fair_share.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from local_server import temporary_server
from rich.console import Console
from rich.table import Table

from voxserve.bench.corpus import load_corpus
from voxserve.bench.load import Target, run_level
from voxserve.bench.probe import ProcessProbe
from voxserve.bench.records import RequestRecord, ResourceUsage, percentiles, summarize
from voxserve.errors import ConfigError
from voxserve.settings import available_cores

R = TypeVar("R")
CORPUS = Path(__file__).with_name("corpus.txt")
KEYS = {"A": "fair-share-bench-key-a", "B": "fair-share-bench-key-b"}
STREAMS_A = 16
TTFA_P95_LIMIT = 1.5  # B's mixed TTFA p95 / idle TTFA p95, at most
THROUGHPUT_LIMIT = 0.95  # mixed total throughput / single-key throughput, at least
PHASES = ("idle", "single", "mixed", "same_key")
MAX_REQUESTS_A = 100_000  # A is bounded by time; this only keeps run_level's count bound out of the way


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    phase_s: float
    ramp_s: float
    seed: int


@dataclass(slots=True)
class PhaseResult:
    """One phase of one round. Throughputs are audio seconds per wall second over the whole phase."""

    wall_s: float
    a_records: list[RequestRecord] = field(default_factory=list)
    b_records: list[RequestRecord] = field(default_factory=list)
    server: ResourceUsage = field(default_factory=ResourceUsage)
    client_cpu_cores: float | None = None

    def throughput(self, records: Sequence[RequestRecord]) -> float:
        return sum(record.audio_s for record in records if record.error is None) / self.wall_s

    @property
    def total_throughput(self) -> float:
        return self.throughput([*self.a_records, *self.b_records])

    @property
    def audio_s_per_server_cpu_s(self) -> float:
        """Throughput per core the server got: steadier than throughput while other work takes cores away."""
        return self.total_throughput / (self.server.cpu_cores or float("nan"))

    def b_ttfa_s(self) -> list[float]:
        return [record.ttfa_s for record in self.b_records if record.error is None and record.ttfa_s is not None]

    def figures(self) -> dict[str, object]:
        """What the report keeps: per-key summaries, throughputs, B's TTFA samples, resource use."""
        figures: dict[str, object] = {"wall_s": round(self.wall_s, 3),
                                      "total_audio_s_per_s": round(self.total_throughput, 3)}  # fmt: skip
        for name, records, concurrency in (("a", self.a_records, STREAMS_A), ("b", self.b_records, 1)):
            if records:
                figures[f"{name}_audio_s_per_s"] = round(self.throughput(records), 3)
                figures[name] = _rounded(asdict(summarize(concurrency, records, self.wall_s)))
        figures["b_ttfa_ms"] = [round(value * 1000, 1) for value in self.b_ttfa_s()]
        figures["audio_s_per_server_cpu_s"] = round(self.audio_s_per_server_cpu_s, 3)
        figures["server"] = _rounded(asdict(self.server))
        figures["client_cpu_cores"] = _rounded(self.client_cpu_cores)
        return figures


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


class Bench:
    """The four phases against one server; A's and B's texts are fixed shuffles of the corpus."""

    def __init__(self, url: str, server_pid: int, texts: list[str], options: Options) -> None:
        speech_url = f"{url}/v1/audio/speech"
        self.options = options
        self.server_pid = server_pid
        self.a = _target(speech_url, KEYS["A"])
        self.b = _target(speech_url, KEYS["B"])
        self.b_as_a = _target(speech_url, KEYS["A"])
        self.a_texts = random.Random(options.seed).sample(texts, len(texts))
        self.b_texts = random.Random(options.seed + 1).sample(texts, len(texts))

    async def warm_up(self) -> None:
        await run_level(self.a, self.a_texts, STREAMS_A, max_requests=STREAMS_A, max_duration_s=60)
        await run_level(self.b, self.b_texts, 1, max_requests=3, max_duration_s=30)

    async def run(self, phase: str) -> PhaseResult:
        # The server is this process's child, so the client's own CPU is the whole tree's less the server's.
        server, tree = ProcessProbe(self.server_pid), ProcessProbe(os.getpid())
        server.start()
        tree.start()
        started = time.perf_counter()
        a_records, b_records = await self._load(phase)
        result = PhaseResult(time.perf_counter() - started, a_records, b_records)
        result.server, whole = server.stop(), tree.stop()
        if whole.cpu_cores is not None and result.server.cpu_cores is not None:
            result.client_cpu_cores = whole.cpu_cores - result.server.cpu_cores
        return result

    async def _load(self, phase: str) -> tuple[list[RequestRecord], list[RequestRecord]]:
        if phase == "idle":
            return [], await self._b_sequential(self.b, delay_s=0.0)
        a_level = run_level(self.a, self.a_texts, STREAMS_A, max_requests=MAX_REQUESTS_A,
                            max_duration_s=self.options.phase_s)  # fmt: skip
        if phase == "single":
            return (await a_level)[0], []
        b_target = self.b if phase == "mixed" else self.b_as_a
        (a_records, _), b_records = await asyncio.gather(a_level, self._b_sequential(b_target, self.options.ramp_s))
        return a_records, b_records

    async def _b_sequential(self, target: Target, delay_s: float) -> list[RequestRecord]:
        """B's requests one at a time, starting `delay_s` in and stopping when A stops (or the corpus ends)."""
        await asyncio.sleep(delay_s)
        budget_s = self.options.phase_s - self.options.ramp_s
        records, _ = await run_level(target, self.b_texts, 1, max_requests=len(self.b_texts), max_duration_s=budget_s)
        return records


def _target(url: str, key: str) -> Target:
    headers = {"Authorization": f"Bearer {key}", "Cache-Control": "no-store"}
    return Target(url, response_format="pcm", stream=True, headers=headers)


def _p95(values: Sequence[float]) -> float:
    """NaN where a phase has no successful request of B (the ratio then fails its target)."""
    return percentiles(values).get("p95", float("nan"))


def round_ratios(phases: dict[str, PhaseResult]) -> dict[str, float]:
    idle_p95 = _p95(phases["idle"].b_ttfa_s())
    single = phases["single"].total_throughput
    per_cpu = phases["single"].audio_s_per_server_cpu_s
    return {
        "b_ttfa_p95_mixed_vs_idle": _p95(phases["mixed"].b_ttfa_s()) / idle_p95,
        "b_ttfa_p95_same_key_vs_idle": _p95(phases["same_key"].b_ttfa_s()) / idle_p95,
        "total_throughput_mixed_vs_single": phases["mixed"].total_throughput / single,
        "total_throughput_same_key_vs_single": phases["same_key"].total_throughput / single,
        "audio_per_server_cpu_s_mixed_vs_single": phases["mixed"].audio_s_per_server_cpu_s / per_cpu,
    }


def spread(values: Sequence[float]) -> dict[str, object]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "per_round": [round(value, 4) for value in values]}  # fmt: skip


def targets(ratios: dict[str, list[float]]) -> dict[str, object]:
    """Each target judged on the median over rounds; `met_every_round` is the stricter reading."""
    ttfa, throughput = ratios["b_ttfa_p95_mixed_vs_idle"], ratios["total_throughput_mixed_vs_single"]
    return {
        "b_ttfa_p95_mixed_vs_idle": {
            "limit": f"<= {TTFA_P95_LIMIT}", "median": round(statistics.median(ttfa), 4),
            "met": statistics.median(ttfa) <= TTFA_P95_LIMIT, "met_every_round": max(ttfa) <= TTFA_P95_LIMIT,
        },
        "total_throughput_mixed_vs_single": {
            "limit": f">= {THROUGHPUT_LIMIT}", "median": round(statistics.median(throughput), 4),
            "met": statistics.median(throughput) >= THROUGHPUT_LIMIT,
            "met_every_round": min(throughput) >= THROUGHPUT_LIMIT,
        },
    }  # fmt: skip


def pooled_b_ttfa(rounds: list[dict[str, PhaseResult]]) -> dict[str, dict[str, float]]:
    """B's TTFA over every round's samples together, per phase: steadier than one round's p95 of a few requests."""
    pooled: dict[str, dict[str, float]] = {}
    for phase in ("idle", "mixed", "same_key"):
        values = [value for phases in rounds for value in phases[phase].b_ttfa_s()]
        pooled[phase] = {name: round(value * 1000, 1) for name, value in percentiles(values).items()}
        pooled[phase]["n"] = len(values)
    return pooled


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu_count": os.cpu_count(), "available_cores": available_cores(), "cpu_model": model,
            "platform": platform.platform()}  # fmt: skip


def versions() -> dict[str, str]:
    return {"voxserve": importlib.metadata.version("voxserve"), "python": platform.python_version(),
            "onnxruntime": importlib.metadata.version("onnxruntime")}  # fmt: skip


def corpus_info(texts: list[str]) -> dict[str, object]:
    return {"path": str(CORPUS.relative_to(Path(__file__).resolve().parents[1])), "utterances": len(texts),
            "sha256": hashlib.sha256(CORPUS.read_bytes()).hexdigest()}  # fmt: skip


def errors(rounds: list[dict[str, PhaseResult]]) -> dict[str, int]:
    def count(result: PhaseResult) -> int:
        return sum(record.error is not None for record in [*result.a_records, *result.b_records])

    return {phase: sum(count(phases[phase]) for phases in rounds) for phase in PHASES}


async def measure(bench: Bench, console: Console) -> list[dict[str, PhaseResult]]:
    await bench.warm_up()
    return await alternating_rounds(bench.options.rounds, PHASES, bench.run, _phase_line, console)


async def alternating_rounds(
    rounds: int,
    phases: Sequence[str],
    run: Callable[[str], Awaitable[R]],
    describe: Callable[[R], str],
    console: Console,
) -> list[dict[str, R]]:
    """`rounds` rounds of every phase, odd rounds in reverse order (slow drift on a shared machine then falls on
    every phase alike), each phase's result printed as it ends."""
    results = []
    for index in range(rounds):
        order = phases if index % 2 == 0 else phases[::-1]
        results.append({})
        for phase in order:
            results[-1][phase] = await run(phase)
            console.print(f"round {index + 1} {phase}: {describe(results[-1][phase])}")
    return results


def _phase_line(result: PhaseResult) -> str:
    ttfa = {name: value * 1000 for name, value in percentiles(result.b_ttfa_s()).items()}
    line = f"{result.wall_s:.1f} s, total {result.total_throughput:.2f} audio-s/s"
    if ttfa:
        line += f", B {len(result.b_records)} requests, TTFA p50 {ttfa['p50']:.0f} / p95 {ttfa['p95']:.0f} ms"
    return line


def report_header(
    benchmark: str, texts: list[str], load_average: tuple[tuple[float, ...], tuple[float, ...]]
) -> dict[str, Any]:
    """What every report starts with: what ran, when, how, where (load at its start and end) and on what text."""
    return {
        "benchmark": benchmark,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(sys.orig_argv),
        "machine": {**machine(), "load_average_1m_5m_15m": {"start": load_average[0], "end": load_average[1]}},
        "versions": versions(),
        "corpus": corpus_info(texts),
    }


def ratios_by_name(per_round: list[dict[str, float]]) -> dict[str, list[float]]:
    """Each ratio's values over the rounds, from each round's ratios."""
    return {name: [ratios[name] for ratios in per_round] for name in per_round[0]}


def build_report(rounds: list[dict[str, PhaseResult]], options: Options, texts: list[str],
                 load_average: tuple[tuple[float, ...], tuple[float, ...]]) -> dict[str, Any]:  # fmt: skip
    ratios = ratios_by_name([round_ratios(phases) for phases in rounds])
    return {
        **report_header("fair_share", texts, load_average),
        "setup": {
            "server": "voxserve serve, default settings, bundled voice, VOXSERVE_API_KEYS with two keys (A, B)",
            "request": "streamed pcm (24 kHz s16le), voice alloy, Cache-Control: no-store",
            "streams_a": STREAMS_A,
            "b_concurrency": 1,
            **asdict(options),
        },
        "targets": targets(ratios),
        "ratios": {name: spread(values) for name, values in ratios.items()},
        "b_ttfa_ms_pooled": pooled_b_ttfa(rounds),
        "errors": errors(rounds),
        "rounds": [{phase: result.figures() for phase, result in phases.items()} for phases in rounds],
    }


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title="fair share: B sequential beside A's 16 streams (ratios within this run)")
    for column in ("ratio", "median", "min", "max", "target", ""):
        table.add_column(column, justify="right")
    for name, values in report["ratios"].items():
        goal = report["targets"].get(name)
        verdict = "" if goal is None else ("met" if goal["met"] else "NOT met")
        limit = goal["limit"] if goal else "context"
        table.add_row(name, *(f"{values[key]:.2f}" for key in ("median", "min", "max")), limit, verdict)
    console.print(table)
    pooled = report["b_ttfa_ms_pooled"]
    line = ", ".join(f"{phase} {ms['p50']:.0f} / {ms['p95']:.0f} (n={ms['n']})" for phase, ms in pooled.items())
    console.print(f"B TTFA p50 / p95 ms, all rounds pooled: {line}")


def parse_args() -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase-s", type=float, default=25.0, help="how long A sends (and B, from --ramp-s)")
    parser.add_argument("--ramp-s", type=float, default=2.0, help="when B starts in the mixed phases")
    parser.add_argument("--seed", type=int, default=7, help="the shuffles of the corpus for A and B")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON report here")
    args = parser.parse_args()
    if args.rounds < 1 or args.phase_s <= args.ramp_s or args.ramp_s < 0:
        parser.error("need --rounds >= 1 and 0 <= --ramp-s < --phase-s")
    return Options(args.rounds, args.phase_s, args.ramp_s, args.seed), args.output


def main() -> None:
    options, output = parse_args()
    try:
        texts = load_corpus(CORPUS)
    except ConfigError as exc:
        sys.exit(f"fair_share: {exc.message}")
    console = Console(width=120)
    load_start = os.getloadavg()
    env = {"VOXSERVE_API_KEYS": json.dumps(list(KEYS.values()))}
    with temporary_server("voxserve-fair-share-", env) as (process, url):
        rounds = asyncio.run(measure(Bench(url, process.pid, texts, options), console))
    report = build_report(rounds, options, texts, (load_start, os.getloadavg()))
    render(report, console)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
