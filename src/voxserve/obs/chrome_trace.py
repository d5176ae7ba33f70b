"""One Chrome trace (chrome://tracing, Perfetto) from a capture: each request's stage spans, the Python
threads' sampled stacks as flame charts, and the engines' own profiles (onnxruntime operators), on one clock.

Summaries live under `otherData.voxserve`; `voxserve profile analyze|compare` read the events themselves."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from voxserve.engines.base import EngineProfile
from voxserve.obs.sampler import StackSample
from voxserve.obs.trace import RequestTrace, Span, sum_stages

REQUESTS_PID, PYTHON_PID, ENGINE_PID = 1, 2, 3
STAGE_CATEGORY, PYTHON_CATEGORY = "stage", "python"
ENGINE_CATEGORIES = ("Node", "Session")
TOP = 25
_BULKY_ARGS = frozenset({"thread_scheduling_stats"})  # per-thread pool counters on every operator event


@dataclass(frozen=True, slots=True)
class Clock:
    """The capture's origin on both clocks it meets: `time.perf_counter` (spans, samples) and `time.time_ns`
    (onnxruntime's profiler starts)."""

    perf_s: float
    wall_ns: int

    def from_perf(self, seconds: float) -> float:
        return (seconds - self.perf_s) * 1e6

    def from_wall(self, nanoseconds: int) -> float:
        return (nanoseconds - self.wall_ns) / 1000


def build_trace(
    clock: Clock,
    traces: Sequence[RequestTrace],
    samples: Sequence[StackSample],
    profiles: Sequence[EngineProfile],
    sample_interval_s: float,
    capture: dict[str, object],
) -> dict[str, object]:
    """The merged trace, with a summary of stages, operators and Python functions under `otherData`."""
    events: list[dict[str, object]] = [
        _metadata("process_name", REQUESTS_PID, 0, "requests"),
        _metadata("process_name", PYTHON_PID, 0, "python threads (sampled)"),
        _metadata("process_name", ENGINE_PID, 0, "engine runtime"),
    ]
    events += _request_events(clock, traces)
    events += _sample_events(clock, samples, sample_interval_s)
    engine_events = [event for profile in profiles for event in _engine_events(clock, profile)]
    events += engine_events
    summary = {
        **capture,
        "requests": len(traces),
        "stages_ms_per_request": _per_request_ms(traces),
        "top_operators": top_operators(engine_events),
        "top_functions": _top_functions(samples, sample_interval_s),
    }
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"voxserve": summary}}


def top_operators(events: Iterable[dict[str, object]], limit: int = TOP) -> list[dict[str, object]]:
    """Engine operators by total time: op type, milliseconds, calls."""
    totals: dict[str, float] = defaultdict(float)
    calls: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node":
            op = str(dict(event.get("args") or {}).get("op_name") or event.get("name"))
            totals[op] += float(event.get("dur", 0)) / 1000
            calls[op] += 1
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:limit]
    return [{"op": op, "ms": round(ms, 3), "calls": calls[op]} for op, ms in ranked]


def _request_events(clock: Clock, traces: Sequence[RequestTrace]) -> list[dict[str, object]]:
    """Each request's spans on as few lanes (threads) as keep them from overlapping."""
    events: list[dict[str, object]] = []
    next_tid = 1
    for trace in traces:
        lanes: list[float] = []  # end time of the last span on each lane
        for span in sorted(trace.spans(), key=lambda span: span.start_s):
            lane = next((i for i, end in enumerate(lanes) if end <= span.start_s), len(lanes))
            if lane == len(lanes):
                lanes.append(0.0)
                label = trace.request_id if lane == 0 else f"{trace.request_id} #{lane + 1}"
                events.append(_metadata("thread_name", REQUESTS_PID, next_tid + lane, f"request {label}"))
            lanes[lane] = span.start_s + span.duration_s
            events.append(_span_event(clock, span, REQUESTS_PID, next_tid + lane, trace.request_id))
        next_tid += max(len(lanes), 1)
    return events


def _span_event(clock: Clock, span: Span, pid: int, tid: int, request_id: str) -> dict[str, object]:
    return {
        "name": span.stage, "cat": STAGE_CATEGORY, "ph": "X", "pid": pid, "tid": tid,
        "ts": round(clock.from_perf(span.start_s), 3), "dur": round(span.duration_s * 1e6, 3),
        "args": {"request_id": request_id, "thread": span.thread, **span.detail},
    }  # fmt: skip


def _sample_events(clock: Clock, samples: Sequence[StackSample], interval_s: float) -> list[dict[str, object]]:
    """Sampled stacks as nested spans per thread: a frame that stays on the stack across consecutive samples
    becomes one span, as in a flame chart."""
    by_thread: dict[str, list[StackSample]] = defaultdict(list)
    for sample in samples:
        by_thread[sample.thread].append(sample)
    events: list[dict[str, object]] = []
    for tid, (thread, thread_samples) in enumerate(sorted(by_thread.items()), start=1):
        events.append(_metadata("thread_name", PYTHON_PID, tid, thread))
        events += _flame(clock, tid, thread_samples, interval_s)
    return events


def _flame(clock: Clock, tid: int, samples: Sequence[StackSample], interval_s: float) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    open_frames: list[tuple[str, float]] = []  # (frame, start), outermost first
    previous_end = 0.0

    def close_to(depth: int, end: float) -> None:
        while len(open_frames) > depth:
            frame, start = open_frames.pop()
            events.append({
                "name": frame, "cat": PYTHON_CATEGORY, "ph": "X", "pid": PYTHON_PID, "tid": tid,
                "ts": round(clock.from_perf(start), 3), "dur": round((end - start) * 1e6, 3),
            })  # fmt: skip

    for sample in samples:
        gap = sample.at_s - previous_end > 2.5 * interval_s  # the thread was gone or the sampler stalled
        common = 0 if gap else _common_prefix(open_frames, sample.stack)
        close_to(common, previous_end if gap else sample.at_s)
        open_frames += [(frame, sample.at_s) for frame in sample.stack[common:]]
        previous_end = sample.at_s + interval_s
    close_to(0, previous_end)
    return events


def _common_prefix(open_frames: list[tuple[str, float]], stack: tuple[str, ...]) -> int:
    depth = 0
    for (frame, _), label in zip(open_frames, stack, strict=False):
        if frame != label:
            break
        depth += 1
    return depth


def _engine_events(clock: Clock, profile: EngineProfile) -> list[dict[str, object]]:
    """The engine profile's events moved onto the capture's clock and into the engine process."""
    try:
        raw = json.loads(profile.path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    shift = clock.from_wall(profile.start_ns)
    moved = []
    for event in raw if isinstance(raw, list) else raw.get("traceEvents", []):
        ts = float(event.get("ts", 0)) + shift
        if event.get("ph") != "X" or event.get("cat") not in ENGINE_CATEGORIES or ts < 0:
            continue  # before the capture: loading the profiling session
        args = {key: value for key, value in (event.get("args") or {}).items() if key not in _BULKY_ARGS}
        moved.append({**event, "pid": ENGINE_PID, "ts": round(ts, 3), "args": {**args, "profile": profile.path.name}})
    return moved


def _per_request_ms(traces: Sequence[RequestTrace]) -> dict[str, float]:
    totals = sum_stages(trace.stages() for trace in traces)
    return {name: round(seconds * 1000 / max(len(traces), 1), 3) for name, seconds in totals.items()}


def _top_functions(samples: Sequence[StackSample], interval_s: float, limit: int = TOP) -> list[dict[str, object]]:
    """Functions by self time (samples with the function innermost), leaving out threads that only waited."""
    innermost = Counter(sample.stack[-1] for sample in samples if sample.stack and not _idle(sample.stack[-1]))
    total = sum(innermost.values())
    return [
        {"function": function, "self_ms": round(count * interval_s * 1000, 1), "share": round(count / total, 4)}
        for function, count in innermost.most_common(limit)
    ]


def _idle(frame: str) -> bool:
    """Frames where a thread sits waiting rather than working."""
    return frame.startswith(("Condition.wait ", "Event.wait ", "Thread._wait_for_tstate_lock ", "_worker ",
                             "BaseSelectorEventLoop.select ", "EpollSelector.select ", "Queue.get ",
                             "SimpleQueue.get "))  # fmt: skip


def _metadata(kind: str, pid: int, tid: int, name: str) -> dict[str, object]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
