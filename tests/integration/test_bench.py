"""`voxserve bench` and `voxserve tune` as a user runs them, against the live test server."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ServerProcess
from voxserve.settings import available_cores

VOXSERVE = str(Path(sys.executable).with_name("voxserve"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VOXSERVE, *args], capture_output=True, text=True, timeout=300, check=False)


def test_bench_writes_a_valid_report_and_plots(server: ServerProcess, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("# two lines\nHello there.\nThe meeting has been moved to Thursday afternoon.\n")
    report_path = tmp_path / "report.json"
    result = run(
        "bench", "--url", f"{server.url}/v1/audio/speech", "--corpus", str(corpus), "--concurrency", "1,2",
        "--requests", "4", "--format", "wav", "--server-pid", str(server.process.pid), "-o", str(report_path),
        "--plots", str(tmp_path / "plots"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert [level["concurrency"] for level in report["levels"]] == [1, 2]
    for level in report["levels"]:
        assert level["requests"] == 4
        assert level["errors"] == 0
        assert level["audio_s_per_wall_s"] > 0
        assert level["ttfa_s"]["p50"] <= level["latency_s"]["p50"]
        assert level["server"]["cpu_cores"] > 0
        assert level["server"]["peak_rss_bytes"] > 50e6
    records = report["records"]["1"]
    assert all(record["status"] == 200 and record["audio_s"] > 0.3 for record in records)
    assert {path.name for path in (tmp_path / "plots").iterdir()} == {"latency.png", "throughput.png"}
    assert run("bench", "compare", str(report_path), str(report_path)).returncode == 0


def test_bench_reads_server_metrics_without_a_pid(server: ServerProcess, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = run("bench", "--url", f"{server.url}/v1/audio/speech", "--concurrency", "1", "--requests", "2",
                 "-o", str(report_path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    level = json.loads(report_path.read_text())["levels"][0]
    assert level["server"]["peak_rss_bytes"] > 50e6


def test_bench_refuses_remote_targets() -> None:
    result = run("bench", "--url", "http://10.255.255.1:8000/v1/audio/speech", "--requests", "1")
    assert result.returncode == 2
    assert "allow-remote" in result.stderr


def test_in_process_baseline_and_tune_write_settings(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Hello there.\nGood morning to you.\n")
    report_path = tmp_path / "report.json"
    result = run("bench", "--in-process", "--no-sweep", "--configs", "1x1", "--corpus", str(corpus),
                 "-o", str(report_path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    in_process = json.loads(report_path.read_text())["in_process"]
    assert in_process[0]["workers"] == 1
    assert in_process[0]["audio_s_per_wall_s"] > 1
    settings_path = tmp_path / "voxserve.toml"
    result = run("tune", "--corpus", str(corpus), "-o", str(settings_path))
    assert result.returncode == 0, result.stderr
    text = settings_path.read_text()
    assert "workers = " in text
    assert "intra_op_threads = " in text
    assert "max_batch_size = " in text
    assert ", batch 4: " in text  # padded batches were measured too
    tuned = tomllib.loads(text)
    assert tuned["workers"] * tuned["intra_op_threads"] <= available_cores()
