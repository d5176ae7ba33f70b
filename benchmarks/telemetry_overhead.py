"""What tracing and metrics cost at saturation: two servers, one with telemetry on (the default) and one with
`VOXSERVE_TELEMETRY=false`, loaded in turn at concurrency 8 with the same requests, round after round, so both
see the same machine (it is shared and noisy; only the ratio is meant to be read).

    .venv/bin/python benchmarks/telemetry_overhead.py [--rounds 4] [--requests 24] [--concurrency 8] \
        -o docs/bench/telemetry_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fair_share import CORPUS, report_header, spread
from local_server import start_server, stop_server

from voxserve.bench.corpus import load_corpus


def corpus() -> list[str]:
    """The repository's corpus; without it the benchmark fails rather than measure one made-up sentence."""
    return load_corpus(CORPUS)


def audio_seconds(client: httpx.Client, text: str) -> float:
    body = {"input": text, "voice": "alloy", "response_format": "pcm"}
    response = client.post("/v1/audio/speech", json=body, headers={"Cache-Control": "no-store"})
    response.raise_for_status()
    return len(response.content) / 2 / 24_000  # pcm: 16-bit mono at 24 kHz


def burst(url: str, texts: list[str], concurrency: int) -> float:
    """Audio seconds per wall second for `texts` sent `concurrency` at a time."""
    with httpx.Client(base_url=url, timeout=300) as client, ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        audio = sum(pool.map(lambda text: audio_seconds(client, text), texts))
        return audio / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    lines = corpus()
    load_start = os.getloadavg()
    servers = {"on": start_server(), "off": start_server({"VOXSERVE_TELEMETRY": "false"})}
    throughput: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for _, url in servers.values():
            burst(url, lines[: args.concurrency], args.concurrency)  # warm-up
        for round_index in range(args.rounds):
            texts = [lines[(round_index * args.requests + i) % len(lines)] for i in range(args.requests)]
            order = ("on", "off") if round_index % 2 == 0 else ("off", "on")
            for name in order:
                throughput[name].append(burst(servers[name][1], texts, args.concurrency))
            print(f"round {round_index + 1}: on {throughput['on'][-1]:.2f}, off {throughput['off'][-1]:.2f} audio-s/s")
    finally:
        for process, _ in servers.values():
            stop_server(process)
    on, off = statistics.median(throughput["on"]), statistics.median(throughput["off"])
    result = {
        "audio_s_per_s_on": round(on, 3), "audio_s_per_s_off": round(off, 3), "on_vs_off": round(on / off, 4),
        "on_vs_off_per_round": spread([a / b for a, b in zip(throughput["on"], throughput["off"], strict=True)]),
        "rounds": throughput,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.output:
        report = {
            **report_header("telemetry_overhead", lines, (load_start, os.getloadavg())),
            "setup": {"servers": "telemetry on (default) and VOXSERVE_TELEMETRY=false", "format": "pcm",
                      "concurrency": args.concurrency, "requests_per_burst": args.requests, "rounds": args.rounds},
            **result,
        }  # fmt: skip
        args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
