"""The server's own performance targets (issue 3), measured with `voxserve bench` against a server started with
default settings, in one run, into one report:

- `stream`: streamed WAV at concurrency 1, 2, 4, 8 and 16 (70 requests a level) with the in-process baseline
  (each text in one engine call) and the server's CPU and peak RSS;
- `buffered_c1`: whole WAV bodies at concurrency 1 against the in-process single-request latency (1 x 2, 2 x 1);
- `cache`: the same 35 texts twice with the audio cache on; the second pass is all hits.

The report's `c1_ttfa_by_first_sentence` fits the c=1 streamed requests' time to first audio against the length of
their text's first sentence (whether TTFA still grows with it). `--summarize REPORT` recomputes it from a report's
records without measuring again.

    .venv/bin/python benchmarks/server_sweep.py -o docs/bench/server_sweep.json [--plots docs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from fair_share import CORPUS, report_header
from local_server import start_server, stop_server
from windowed_decoder import first_sentence

from voxserve.bench.corpus import load_corpus

VOXSERVE = Path(sys.executable).with_name("voxserve")
RUNS: dict[str, list[str]] = {
    "stream": ["--in-process", "--concurrency", "1,2,4,8,16", "--requests", "70"],
    "buffered_c1": ["--in-process", "--configs", "1x2,2x1", "--concurrency", "1", "--requests", "35", "--no-stream"],
    "cache_fill": ["--cache", "--concurrency", "1", "--requests", "35", "--no-in-process"],
    "cache": ["--cache", "--concurrency", "1", "--requests", "35", "--no-in-process"],
}


def bench(url: str, pid: int, options: list[str], plots: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="voxserve-sweep-") as directory:
        output = Path(directory) / "report.json"
        command = [str(VOXSERVE), "bench", "--url", f"{url}/v1/audio/speech", "--corpus", str(CORPUS),
                   "--format", "wav", "--server-pid", str(pid), "-o", str(output), *options,
                   *(["--plots", str(plots)] if plots else [])]  # fmt: skip
        subprocess.run(command, check=True)
        return json.loads(output.read_text(encoding="utf-8"))


def ttfa_by_first_sentence(records: list[dict[str, Any]], texts: list[str]) -> dict[str, float]:
    """The c=1 requests' TTFA against their first sentence's characters: least-squares slope and correlation. At
    c=1 the load generator sends the corpus lines in order, so request `i` spoke line `i % len(texts)`."""
    chars = np.array([len(first_sentence(texts[index % len(texts)])) for index in range(len(records))], float)
    ttfa_ms = np.array([record["ttfa_s"] * 1000 for record in records])
    return {
        "requests": len(records),
        "first_sentence_chars_min_max": [int(chars.min()), int(chars.max())],
        "ms_per_100_chars": round(float(np.polyfit(chars, ttfa_ms, 1)[0]) * 100, 2),
        "correlation": round(float(np.corrcoef(chars, ttfa_ms)[0, 1]), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--plots", type=Path, help="where the stream run's latency and throughput PNGs go")
    parser.add_argument("--summarize", type=Path, help="a report to recompute the summary of, without measuring")
    args = parser.parse_args()
    texts = load_corpus(CORPUS)
    if args.summarize:
        report = json.loads(args.summarize.read_text(encoding="utf-8"))
        report["c1_ttfa_by_first_sentence"] = ttfa_by_first_sentence(report["runs"]["stream"]["records"]["1"], texts)
        args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        return
    load_start = os.getloadavg()
    process, url = start_server()
    try:
        runs = {name: bench(url, process.pid, options, args.plots if name == "stream" else None)
                for name, options in RUNS.items()}  # fmt: skip
    finally:
        stop_server(process)
    report = {
        **report_header("server_sweep", texts, (load_start, os.getloadavg())),
        "setup": {"server": "voxserve serve, default settings, bundled voice", "runs": RUNS},
        "runs": {name: run for name, run in runs.items() if name != "cache_fill"},
        "c1_ttfa_by_first_sentence": ttfa_by_first_sentence(runs["stream"]["records"]["1"], texts),
    }
    args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
