"""The whole test suite several times in a row while a CPU hog keeps every core busy: the proof that no test
races the clock. Stops at the first failing run (its output is kept in the report).

The hog is one busy-looping process per available core, at the same priority as the suite, started before the
first run and stopped after the last. Each run is `pytest` exactly as `make test` runs it (the project's pytest
settings: warnings are errors, a 120 s per-test timeout).

    .venv/bin/python benchmarks/stress_suite.py [--runs 5] -o docs/bench/stress_suite.json

Exits 1 when a run fails.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from fair_share import machine, versions

from voxserve.settings import available_cores

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_TAIL_CHARS = 4000


def _spin() -> None:
    while True:
        pass


def start_hog(processes: int) -> list[multiprocessing.Process]:
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for hog in hogs:
        hog.start()
    return hogs


def run_suite(pytest_args: list[str]) -> dict[str, object]:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    output = finished.stdout + finished.stderr
    summary = next((line for line in reversed(output.splitlines()) if " in " in line and "passed" in line), "")
    return {
        "returncode": finished.returncode,
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": summary.strip("= "),
        "output_tail": "" if finished.returncode == 0 else output[-OUTPUT_TAIL_CHARS:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hog-processes", type=int, default=available_cores(), help="default: one per core")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON report here")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (default: the whole suite)")
    args = parser.parse_args()
    hogs = start_hog(args.hog_processes)
    runs: list[dict[str, object]] = []
    try:
        for index in range(args.runs):
            result = run_suite(args.pytest_args)
            runs.append(result)
            print(
                f"run {index + 1}/{args.runs}: exit {result['returncode']} in {result['wall_s']} s; {result['summary']}"
            )
            if result["returncode"] != 0:
                print(result["output_tail"])
                break
    finally:
        for hog in hogs:
            hog.kill()
    failed = sum(run["returncode"] != 0 for run in runs)
    report = {
        "benchmark": "stress_suite",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine() | {"load_average_1m_at_end": round(os.getloadavg()[0], 2)},
        "versions": versions(),
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "hog_processes": args.hog_processes,
        "runs_requested": args.runs,
        "runs": runs,
        "failed_runs": failed,
        "passed": failed == 0 and len(runs) == args.runs,
    }
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
