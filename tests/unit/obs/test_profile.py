"""Chrome trace assembly, `profile compare`, request traces, and the GPU probe without a GPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

from voxserve.engines.base import EngineProfile
from voxserve.obs.chrome_trace import Clock, build_trace
from voxserve.obs.gpu import GpuProbe
from voxserve.obs.profile_report import compare, digest, largest_stage_difference
from voxserve.obs.sampler import StackSample
from voxserve.obs.trace import RequestTrace


def trace_with(stages: dict[str, float], request_id: str) -> RequestTrace:
    trace = RequestTrace(request_id)
    start = trace.started_at
    for stage, seconds in stages.items():
        trace.add(stage, seconds, start_s=start)
        start += seconds
    return trace


def test_compare_names_the_stage_that_differs() -> None:
    clock = Clock(time.perf_counter(), time.time_ns())
    before = build_trace(clock, [trace_with({"model": 0.1, "encode": 0.01}, f"a{i}") for i in range(3)], [], [],
                         0.01, {})  # fmt: skip
    after = build_trace(clock, [trace_with({"model": 0.1, "encode": 0.08}, f"b{i}") for i in range(3)], [], [],
                        0.01, {})  # fmt: skip
    differences = compare(digest(before), digest(after))
    largest = largest_stage_difference(differences)
    assert largest is not None
    assert largest.name == "encode"
    assert round(largest.delta_ms, 6) == 70.0
    assert round(largest.ratio or 0, 6) == 8.0


def test_overlapping_spans_of_one_request_get_separate_lanes() -> None:
    trace = RequestTrace("r1")
    trace.add("model", 0.2, start_s=trace.started_at)
    trace.add("model", 0.2, start_s=trace.started_at + 0.1)
    trace.add("encode", 0.05, start_s=trace.started_at + 0.35)
    events = build_trace(Clock(trace.started_at, time.time_ns()), [trace], [], [], 0.01, {})["traceEvents"]
    spans = [event for event in events if event.get("cat") == "stage"]
    assert [span["tid"] for span in spans] == [1, 2, 1]
    assert spans[1]["ts"] == 100_000.0
    assert spans[1]["dur"] == 200_000.0


def test_sampled_stacks_become_nested_flame_spans() -> None:
    t0 = 100.0
    samples = [
        StackSample(t0, "worker", ("run", "synthesize")),
        StackSample(t0 + 0.01, "worker", ("run", "synthesize")),
        StackSample(t0 + 0.02, "worker", ("run", "encode")),
    ]
    events = build_trace(Clock(t0, time.time_ns()), [], samples, [], 0.01, {})["traceEvents"]
    python = {event["name"]: event for event in events if event.get("cat") == "python"}
    assert python["run"]["dur"] == 30_000.0
    assert python["synthesize"]["ts"] == 0.0
    assert python["synthesize"]["dur"] == 20_000.0
    assert python["encode"]["ts"] == 20_000.0


def test_engine_profiles_are_moved_onto_the_capture_clock(tmp_path: Path) -> None:
    wall = time.time_ns()
    path = tmp_path / "ort.json"
    path.write_text(json.dumps([
        {"cat": "Session", "ph": "X", "name": "model_loading_uri", "ts": 0, "dur": 5, "pid": 9, "tid": 9},
        {"cat": "Node", "ph": "X", "name": "conv_kernel_time", "ts": 2_000, "dur": 300, "pid": 9, "tid": 9,
         "args": {"op_name": "Conv", "thread_scheduling_stats": {"x": 1}}},
    ]))  # fmt: skip
    profile = EngineProfile(path, start_ns=wall - 1_000_000)  # started 1 ms before the capture
    trace = build_trace(Clock(time.perf_counter(), wall), [], [], [profile], 0.01, {})
    nodes = [event for event in trace["traceEvents"] if event.get("cat") in ("Node", "Session")]
    assert [node["name"] for node in nodes] == ["conv_kernel_time"]  # loading happened before the capture
    assert nodes[0]["ts"] == 1_000.0
    assert "thread_scheduling_stats" not in nodes[0]["args"]
    assert trace["otherData"]["voxserve"]["top_operators"] == [{"op": "Conv", "ms": 0.3, "calls": 1}]


def test_trace_summary_and_server_timing() -> None:
    trace = trace_with({"phonemize": 0.001, "queue": 0.01, "model": 0.1, "encode": 0.002}, "r1")
    trace.add("model", 0.05, chars=12, batch=1, solo=True)
    trace.input_chars, trace.audio_s = 30, 2.0
    trace.finish()
    summary = trace.summary()
    assert summary["stage_counts"]["model"] == 2
    assert summary["model_calls"][1] == {"duration_s": 0.05, "chars": 12, "batch": 1, "solo": True}
    assert list(summary["stages_s"]) == ["phonemize", "queue", "model", "encode"]
    assert trace.server_timing().startswith("phonemize;dur=1.00, queue;dur=10.00, model;dur=150.00")


def test_trace_summary_lists_every_span_from_the_requests_start_in_time_order() -> None:
    trace = RequestTrace("r1")
    trace.add("model", 0.05, start_s=trace.started_at + 0.02, segment=1)
    trace.add("phonemize", 0.01, start_s=trace.started_at)
    spans = trace.summary()["spans"]
    assert spans == [
        {"stage": "phonemize", "start_s": 0.0, "duration_s": 0.01},
        {"stage": "model", "start_s": 0.02, "duration_s": 0.05, "segment": 1},
    ]


def test_disabled_trace_records_nothing() -> None:
    trace = RequestTrace(enabled=False)
    with trace.stage("model"):
        pass
    assert trace.stages() == {}
    assert trace.server_timing().startswith("total;dur=")


def test_gpu_probe_without_a_gpu_reports_why_and_reads_nothing() -> None:
    probe = GpuProbe()
    if probe.available:  # a machine with a GPU checks the other branch: every field read or None
        assert all(snapshot.name for snapshot in probe.read())
        return
    assert probe.read() == []
    assert probe.reason.startswith("no NVIDIA GPU")
    probe.close()
