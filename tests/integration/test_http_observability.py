"""Stage timing, `/metrics`, `/diagnostics/*`, the profiler and `voxserve profile` against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess, metric_value
from voxserve.obs.gpu import GpuProbe

VOICE = "en_US-joe-medium"
SHORT = "One short line."
LONG = (
    "The committee reviewed every proposal twice, compared the costs line by line, and asked the engineers to "
    "explain each estimate in plain words before the vote."
)


def speech(http: httpx.Client, text: str = SHORT, **fields: object) -> httpx.Response:
    response = http.post("/v1/audio/speech", json={"input": text, "voice": VOICE, "response_format": "wav", **fields})
    assert response.status_code == 200, response.text
    return response


def settled(http: httpx.Client, name: str, labels: dict[str, str], expected: float) -> float:
    """The metric once it reaches `expected` (or its last value after 5 s): a request is recorded just after
    its last byte leaves, so a scrape right after the response can run ahead of it."""
    deadline = time.monotonic() + 5
    while (value := metric_value(http, name, labels, absent=0.0)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def server_timing(response: httpx.Response) -> dict[str, float]:
    entries = (part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    return {name: float(ms) / 1000 for name, ms in entries}


def test_stage_timings_sum_to_the_wall_time_of_a_buffered_request(http: httpx.Client) -> None:
    started = time.perf_counter()
    timing = server_timing(speech(http, stream=False))
    client_wall = time.perf_counter() - started
    total = timing.pop("total")
    timing.pop("ttfa", None)
    assert {"receive", "normalize", "segment", "phonemize", "queue", "model", "postprocess", "encode"} <= set(timing)
    assert sum(timing.values()) == pytest.approx(total, rel=0.10)
    assert total <= client_wall


def test_sse_done_event_carries_the_stage_breakdown(http: httpx.Client) -> None:
    response = speech(http, LONG, stream_format="sse")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    timing = events[-1]["timing"]
    assert events[-1]["type"] == "speech.audio.done"
    assert timing["segments"] > 1
    segment_calls = [call for call in timing["model_calls"] if not call["window"]]
    assert len(segment_calls) == timing["segments"]
    assert any(call["window"] for call in timing["model_calls"])  # the first segment's later windows
    assert timing["stages_s"]["model"] > 0
    assert timing["rtf"] > 0
    assert timing["chars_per_s"] > 0
    assert all(call["chars"] > 0 for call in timing["model_calls"])


def test_request_metrics_move_with_requests(http: httpx.Client) -> None:
    labels = {"route": "/v1/audio/speech", "status": "200", "engine": "piper", "format": "wav"}
    before = {
        "requests": metric_value(http, "voxserve_requests_total", labels, absent=0.0),
        "latency": metric_value(
            http, "voxserve_request_duration_seconds_count", {"route": "/v1/audio/speech"}, absent=0.0
        ),
        "ttfa": metric_value(http, "voxserve_time_to_first_audio_seconds_count", {"engine": "piper"}, absent=0.0),
        "model": metric_value(http, "voxserve_stage_duration_seconds_count", {"stage": "model"}, absent=0.0),
        "audio": metric_value(http, "voxserve_audio_seconds_total", {"engine": "piper"}, absent=0.0),
        "rtf": metric_value(http, "voxserve_rtf_ratio_count", {"engine": "piper"}, absent=0.0),
    }
    for _ in range(2):
        speech(http)
    assert settled(http, "voxserve_requests_total", labels, before["requests"] + 2) == before["requests"] + 2
    latency_count = metric_value(http, "voxserve_request_duration_seconds_count", {"route": "/v1/audio/speech"})
    assert latency_count == before["latency"] + 2
    assert metric_value(http, "voxserve_time_to_first_audio_seconds_count", {"engine": "piper"}) == before["ttfa"] + 2
    assert metric_value(http, "voxserve_stage_duration_seconds_count", {"stage": "model"}) == before["model"] + 2
    assert metric_value(http, "voxserve_rtf_ratio_count", {"engine": "piper"}) == before["rtf"] + 2
    assert metric_value(http, "voxserve_audio_seconds_total", {"engine": "piper"}) > before["audio"] + 1.0


def test_error_requests_are_counted_by_status(http: httpx.Client) -> None:
    labels = {"route": "/v1/audio/speech", "status": "404", "engine": "none", "format": "flac"}
    before = metric_value(http, "voxserve_requests_total", labels, absent=0.0)
    body = {"input": "hi", "voice": "nobody", "response_format": "flac"}
    assert http.post("/v1/audio/speech", json=body).status_code == 404
    assert settled(http, "voxserve_requests_total", labels, before + 1) == before + 1


def test_process_and_event_loop_metrics_are_exported(http: httpx.Client) -> None:
    families = {family.name: family for family in text_string_to_metric_families(http.get("/metrics").text)}
    assert families["voxserve_process_threads"].samples[0].value > 1
    assert families["process_resident_memory_bytes"].samples[0].value > 50e6
    assert any(s.name.endswith("_count") and s.value > 0 for s in families["voxserve_event_loop_lag_seconds"].samples)
    assert "voxserve_queue_pending_audio_seconds" in families


def test_gpu_probes_report_what_this_host_has(http: httpx.Client) -> None:
    """Without a GPU the probes degrade cleanly and say why; with one they read it. Either way the server and a
    probe in this process agree (so the test passes on a GPU host too, checking the other branch)."""
    local = GpuProbe()
    try:
        assert metric_value(http, "voxserve_gpu_available") == len(local.read())
        gpu = http.get("/diagnostics/performance").json()["gpu"]
        assert gpu["available"] is local.available
        if local.available:
            assert len(gpu["devices"]) == len(local.read())
            assert all(device["name"] for device in gpu["devices"])
        else:
            assert gpu["devices"] == []
            assert "no NVIDIA GPU" in gpu["reason"]
    finally:
        local.close()


def test_performance_snapshot_describes_the_server(http: httpx.Client) -> None:
    speech(http)
    snapshot = http.get("/diagnostics/performance").json()
    assert snapshot["versions"]["onnxruntime"]
    providers = snapshot["engines"]["piper"]["models"][0]["sessions"]["shared"]["providers"]
    assert providers == ["CPUExecutionProvider"]
    assert snapshot["threads"]["workers"] >= 1
    assert snapshot["config"]["default_voice"] == VOICE
    assert snapshot["system"]["logical_cores"] >= 1
    assert snapshot["system"]["memory_total_bytes"] > 0
    window = snapshot["window"]
    assert window["requests"] >= 1
    assert window["latency_p50_s"] > 0
    assert window["stage_shares"]["model"] > 0.3


def test_bottleneck_names_the_model_on_this_machine(http: httpx.Client) -> None:
    for text in (SHORT, LONG, SHORT):
        speech(http, text)
    report = http.get("/diagnostics/bottleneck").json()
    limiting = next(finding for finding in report["findings"] if finding["id"] == "limiting_stage")
    assert limiting["numbers"]["stage"] == "model"
    assert limiting["summary"].startswith("model: ")
    assert limiting["action"]
    assert {finding["severity"] for finding in report["findings"]} <= {"critical", "warning", "info"}


def test_benchmark_reports_rtf_and_stage_breakdown(http: httpx.Client) -> None:
    result = http.post("/diagnostics/benchmark", json={"seconds": 1.0, "concurrency": 2}).json()
    assert result["requests"] >= 2
    assert result["audio_s"] > 0
    assert 0 < result["rtf"] < 5
    assert result["chars_per_s"] > 0
    assert result["stages_ms_per_request"]["model"] > 0
    assert result["machine"]["logical_cores"] >= 1
    assert http.post("/diagnostics/benchmark", json={"seconds": 0}).status_code == 400


def capture(http: httpx.Client, texts: list[str], path: Path) -> dict:
    start = http.post("/diagnostics/profiler/start", params={"requests": len(texts)})
    assert start.status_code == 200, start.text
    assert http.post("/diagnostics/profiler/start", params={"seconds": 1}).status_code == 409
    for text in texts:
        speech(http, text)
    for _ in range(100):
        if http.get("/diagnostics/profiler/status").json()["state"] == "done":
            break
        time.sleep(0.1)
    result = http.get("/diagnostics/profiler/result")
    assert result.status_code == 200
    path.write_bytes(result.content)
    return result.json()


def test_profiler_capture_is_a_chrome_trace_with_model_spans_and_operators(http: httpx.Client, tmp_path: Path) -> None:
    trace = capture(http, [SHORT, LONG, SHORT], tmp_path / "capture.json")
    events = trace["traceEvents"]
    assert all({"ph", "pid", "name"} <= event.keys() for event in events)
    complete = [event for event in events if event["ph"] == "X"]
    assert all(event["dur"] >= 0 and "ts" in event for event in complete)
    model_spans = [event for event in complete if event.get("cat") == "stage" and event["name"] == "model"]
    operators = [event for event in complete if event.get("cat") == "Node"]
    assert len({span["args"]["request_id"] for span in model_spans}) == 3
    assert operators
    assert {"Conv"} <= {event["args"]["op_name"] for event in operators}
    first_model, last_model = min(s["ts"] for s in model_spans), max(s["ts"] + s["dur"] for s in model_spans)
    assert all(first_model - 5_000 <= event["ts"] <= last_model + 5_000 for event in operators)
    summary = trace["otherData"]["voxserve"]
    assert summary["requests"] == 3
    assert summary["top_operators"][0]["ms"] > 0
    assert any(event.get("cat") == "python" for event in complete)


def test_profile_compare_names_the_stage_that_differs(http: httpx.Client, tmp_path: Path) -> None:
    fast = tmp_path / "fast.json"
    slow = tmp_path / "slow.json"
    capture(http, [SHORT] * 3, fast)
    capture(http, [LONG] * 3, slow)
    assert "largest stage difference: model (+" in voxserve("profile", "compare", str(fast), str(slow))
    report = voxserve("profile", "analyze", str(slow))
    assert "3 request(s)" in report
    assert "model" in report
    assert "Conv" in report


def voxserve(*args: str) -> str:
    command = [str(Path(sys.executable).with_name("voxserve")), *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout


def test_profiler_limits_are_checked(http: httpx.Client) -> None:
    assert http.post("/diagnostics/profiler/start").status_code == 400
    bad = http.post("/diagnostics/profiler/start", params={"requests": 0})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"


def test_diagnostics_can_be_turned_off(constrained_server: ServerProcess) -> None:
    with httpx.Client(base_url=constrained_server.url, timeout=30) as client:
        assert client.get("/diagnostics/performance").status_code == 404
        assert client.post("/diagnostics/profiler/start", params={"requests": 1}).status_code == 404
        assert client.get("/metrics").status_code == 200


def test_summary_line_is_logged_every_n_requests(http: httpx.Client, server: ServerProcess) -> None:
    # Only what these requests make the server write counts: earlier tests' lines are already in the log.
    already = len(server.log_text())
    for _ in range(5):  # the test server logs a summary every 5 speech requests
        speech(http)
    deadline = time.monotonic() + 5
    while "summary requests=" not in server.log_text()[already:] and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in server.log_text()[already:].splitlines() if "summary requests=" in line)
    for field in ("latency_p50=", "ttfa_p50=", "rtf_p50=", "chars_per_s_p50=", "cpu_cores=", "rss_mb=", "gpu_util="):
        assert field in line


def test_profiler_failure_hides_paths_from_clients_and_a_later_start_is_allowed(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where profile_dir's parent should be")
    env = {
        "VOXSERVE_PROFILE_DIR": str(blocker / "captures"),
        "VOXSERVE_ESPEAK_VOICES": "false",
        "VOXSERVE_DATA_DIR": str(tmp_path / "data"),
    }
    server = ServerProcess(env, tmp_path / "server.log")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(2):  # failed, not stuck running: the second start is tried again, not refused
                failed = client.post("/diagnostics/profiler/start", params={"seconds": 1})
                assert failed.status_code == 500
                assert str(tmp_path) not in failed.text
                status = client.get("/diagnostics/profiler/status").json()
                assert status["state"] == "failed"
                assert "profile_dir" in status["error"]
                assert str(tmp_path) not in str(status)
            blocker.unlink()
            assert client.post("/diagnostics/profiler/start", params={"seconds": 0.5}).status_code == 200
            for _ in range(100):
                if client.get("/diagnostics/profiler/status").json()["state"] == "done":
                    break
                time.sleep(0.1)
            assert client.get("/diagnostics/profiler/result").status_code == 200
        assert str(blocker / "captures") in server.log_text()
    finally:
        server.stop()
