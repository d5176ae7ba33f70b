"""What word and phoneme timestamps cost at saturation: one server, concurrency 8, SSE (`pcm`) requests over the
corpus with `timestamps: phoneme` and with `timestamps: none`, in alternating rounds on the same server (the
machine is shared and noisy; only the ratios are meant to be read). Target: throughput with timestamps >= 0.98x
without.

    .venv/bin/python benchmarks/timestamps_cost.py [--rounds 4] [--phase-s 25] -o docs/bench/timestamps_cost.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fair_share import CORPUS, alternating_rounds, ratios_by_name, report_header, spread
from local_server import temporary_server
from rich.console import Console

from voxserve.bench.corpus import load_corpus

PHASES = ("timestamps", "plain")
LEVELS = {"timestamps": "phoneme", "plain": "none"}
THROUGHPUT_LIMIT = 0.98
PCM_BYTES_PER_S = 48_000  # 24 kHz, 16-bit mono
DELTA = 'data: {"type":"speech.audio.delta","audio":"'
TIMESTAMPS = 'data: {"type":"speech.audio.timestamps"'


def base64_bytes(encoded: str) -> int:
    return len(encoded) * 3 // 4 - encoded.count("=", len(encoded) - 2)


@dataclass
class PhaseResult:
    wall_s: float = 0.0
    audio_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    timestamp_events: int = 0
    errors: int = 0

    @property
    def audio_s_per_s(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s else 0.0


class Load:
    def __init__(self, url: str, texts: list[str], concurrency: int, phase_s: float) -> None:
        self.url, self.texts, self.concurrency, self.phase_s = url, texts, concurrency, phase_s
        self._next = 0

    async def run(self, phase: str) -> PhaseResult:
        """`concurrency` clients send requests back to back for `phase_s`; requests still running then finish
        and count (the wall time runs until the last one ends)."""
        result = PhaseResult()
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.url, timeout=300) as client:
            await asyncio.gather(*(self._client(client, phase, started, result) for _ in range(self.concurrency)))
        result.wall_s = time.perf_counter() - started
        return result

    async def _client(self, client: httpx.AsyncClient, phase: str, started: float, result: PhaseResult) -> None:
        while time.perf_counter() - started < self.phase_s:
            text = self.texts[self._next % len(self.texts)]
            self._next += 1
            body = {"input": text, "voice": "alloy", "response_format": "pcm", "stream_format": "sse",
                    "timestamps": LEVELS[phase]}  # fmt: skip
            sent = time.perf_counter()
            response = await client.post("/v1/audio/speech", json=body, headers={"Cache-Control": "no-store"})
            if response.status_code != 200:
                result.errors += 1
                continue
            result.latencies_s.append(time.perf_counter() - sent)
            # Read lightly: this client shares the machine with the server, and parsing every timestamp event
            # would charge the server's side for the client's work.
            for line in response.text.splitlines():
                if line.startswith(DELTA):
                    payload = line[len(DELTA) : line.rindex('"')]
                    result.audio_s += base64_bytes(payload) / PCM_BYTES_PER_S
                result.timestamp_events += line.startswith(TIMESTAMPS)


def describe(result: PhaseResult) -> str:
    p50 = statistics.median(result.latencies_s)
    return (f"{result.audio_s_per_s:.2f} audio-s/s, {len(result.latencies_s)} requests, p50 {p50:.2f} s, "
            f"{result.timestamp_events} timestamp events")  # fmt: skip


def build_report(rounds: list[dict[str, PhaseResult]], args: argparse.Namespace, texts: list[str],
                 load_average: tuple[tuple[float, ...], tuple[float, ...]]) -> dict[str, Any]:  # fmt: skip
    ratios = ratios_by_name([
        {"throughput_timestamps_vs_plain": phases["timestamps"].audio_s_per_s / phases["plain"].audio_s_per_s,
         "latency_p50_timestamps_vs_plain": statistics.median(phases["timestamps"].latencies_s)
         / statistics.median(phases["plain"].latencies_s)}
        for phases in rounds
    ])  # fmt: skip
    throughput = ratios["throughput_timestamps_vs_plain"]
    setup = {
        "server": "voxserve serve, default settings, bundled voice (alloy)", "concurrency": args.concurrency,
        "requests": "SSE, pcm, Cache-Control: no-store, corpus lines in order; timestamps phoneme vs none",
        "rounds": args.rounds, "phase_s": args.phase_s,
    }  # fmt: skip
    target = {
        "limit": f">= {THROUGHPUT_LIMIT}", "median": round(statistics.median(throughput), 4),
        "met": statistics.median(throughput) >= THROUGHPUT_LIMIT,
        "met_every_round": min(throughput) >= THROUGHPUT_LIMIT,
    }  # fmt: skip
    return {
        **report_header("timestamps_cost", texts, load_average),
        "setup": setup,
        "targets": {"throughput_timestamps_vs_plain": target},
        "ratios": {name: spread(values) for name, values in ratios.items()},
        "audio_s_per_s": {phase: spread([phases[phase].audio_s_per_s for phases in rounds]) for phase in PHASES},
        "errors": {phase: sum(phases[phase].errors for phases in rounds) for phase in PHASES},
        "timestamp_events": {phase: sum(phases[phase].timestamp_events for phases in rounds) for phase in PHASES},
    }


async def measure(url: str, texts: list[str], args: argparse.Namespace, console: Console) -> list[dict[str, Any]]:
    load = Load(url, texts, args.concurrency, args.phase_s)
    await Load(url, texts[: args.concurrency], args.concurrency, 0.0).run("timestamps")  # warm-up
    return await alternating_rounds(args.rounds, PHASES, load.run, describe, console)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--phase-s", type=float, default=25.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    console = Console()
    texts = load_corpus(CORPUS)
    load_start = os.getloadavg()
    with temporary_server("voxserve-timestamps-") as (_, url):
        rounds = asyncio.run(measure(url, texts, args, console))
    report = build_report(rounds, args, texts, (load_start, os.getloadavg()))
    console.print_json(json.dumps({key: report[key] for key in ("targets", "ratios", "audio_s_per_s", "errors")}))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
