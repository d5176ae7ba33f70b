"""`Profiler` states with a fake engine: one capture at a time, bounded by requests or seconds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fakes import FakeEngine
from voxserve.errors import ConflictError, InvalidRequestError, NotFoundError
from voxserve.obs.telemetry import Telemetry, TelemetryOptions
from voxserve.obs.trace import RequestTrace
from voxserve.service.profiling import Profiler


def wait_for(profiler: Profiler, state: str) -> None:
    for _ in range(100):
        if profiler.status()["state"] == state:
            return
        time.sleep(0.02)
    raise AssertionError(f"profiler never reached {state}: {profiler.status()}")


def finished_trace(telemetry: Telemetry) -> None:
    trace = RequestTrace()
    trace.engine, trace.response_format = "fake", "wav"
    trace.add("model", 0.01)
    telemetry.observe("/v1/audio/speech", 200, trace, 0.02)


def test_capture_ends_after_n_requests_and_refuses_a_second_meanwhile(tmp_path: Path) -> None:
    telemetry = Telemetry(TelemetryOptions())
    profiler = Profiler([FakeEngine()], telemetry, tmp_path)
    with pytest.raises(NotFoundError):
        profiler.result()
    profiler.start(requests=2)
    with pytest.raises(ConflictError):
        profiler.start(seconds=1)
    finished_trace(telemetry)
    assert profiler.status()["requests_captured"] == 1
    finished_trace(telemetry)
    wait_for(profiler, "done")
    path = profiler.result()
    assert path.parent.parent == tmp_path
    assert path.stat().st_size > 0
    finished_trace(telemetry)  # after the capture: not recorded
    assert profiler.status()["requests_captured"] == 2


def test_capture_bounded_by_seconds_ends_without_traffic(tmp_path: Path) -> None:
    profiler = Profiler([FakeEngine()], Telemetry(TelemetryOptions()), tmp_path)
    profiler.start(seconds=0.2)
    wait_for(profiler, "done")
    assert profiler.status()["requests_captured"] == 0


def test_capture_needs_a_bound(tmp_path: Path) -> None:
    profiler = Profiler([FakeEngine()], Telemetry(TelemetryOptions()), tmp_path)
    with pytest.raises(InvalidRequestError):
        profiler.start()
    with pytest.raises(InvalidRequestError):
        profiler.start(seconds=10_000)
    assert profiler.status()["state"] == "idle"
