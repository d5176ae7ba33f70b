"""`Profiler` states with a fake engine: one capture at a time, bounded by requests or seconds."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.fakes import FakeEngine
from voxserve.engines.base import EngineProfile
from voxserve.errors import ConfigError, ConflictError, InvalidRequestError, NotFoundError, VoxError
from voxserve.obs.telemetry import Telemetry, TelemetryOptions
from voxserve.obs.trace import RequestTrace
from voxserve.service.profiling import FINISH_FAILED, NO_DIRECTORY, START_FAILED, Profiler


class BrokenProfilingEngine(FakeEngine):
    """Fails to start or to stop profiling while told to; says whether it is profiling."""

    def __init__(self, fail_start: bool = False, fail_stop: bool = False) -> None:
        super().__init__()
        self.fail_start, self.fail_stop, self.profiling = fail_start, fail_stop, False

    def start_profiling(self, directory: Path) -> None:
        self.profiling = True
        if self.fail_start:
            raise RuntimeError(f"cannot load the model with profiling into {directory}")

    def stop_profiling(self) -> list[EngineProfile]:
        self.profiling = False
        if self.fail_stop:
            raise RuntimeError("cannot end the profile")
        return []


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


def assert_failed_safely(profiler: Profiler, message: str, secret: str) -> None:
    status = profiler.status()
    assert status["state"] == "failed"
    assert status["error"] == message
    assert secret not in str(status)
    assert status["result"] is None


def captures(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.name.startswith("voxserve-profile-"))


def test_an_unwritable_profile_dir_fails_the_capture_and_a_later_start_is_allowed(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    profiler = Profiler([FakeEngine()], Telemetry(TelemetryOptions()), blocker / "captures")
    with pytest.raises(VoxError) as raised:
        profiler.start(seconds=60)
    assert raised.value.message == NO_DIRECTORY
    assert str(tmp_path) not in raised.value.message
    assert_failed_safely(profiler, NO_DIRECTORY, str(tmp_path))
    with pytest.raises(VoxError):  # failed, not stuck running: not a ConflictError
        profiler.start(seconds=60)
    with pytest.raises(NotFoundError):
        profiler.result()
    blocker.unlink()
    profiler.start(seconds=60)
    profiler.close()
    assert profiler.status()["state"] == "done"
    assert profiler.status()["error"] is None
    assert profiler.result().parent.parent == blocker / "captures"


def test_an_engine_that_cannot_start_profiling_fails_the_capture_and_stops_the_others(tmp_path: Path) -> None:
    telemetry = Telemetry(TelemetryOptions())
    healthy, broken = BrokenProfilingEngine(), BrokenProfilingEngine(fail_start=True)
    profiler = Profiler([healthy, broken], telemetry, tmp_path)
    with pytest.raises(VoxError) as raised:
        profiler.start(requests=1)
    assert not isinstance(raised.value, ConflictError)
    assert_failed_safely(profiler, START_FAILED, str(tmp_path))
    assert not healthy.profiling
    assert not broken.profiling
    finished_trace(telemetry)  # no listener left behind
    assert profiler.status()["requests_captured"] == 0
    broken.fail_start = False
    profiler.start(requests=1)
    finished_trace(telemetry)
    wait_for(profiler, "done")


def test_a_capture_that_cannot_be_finished_fails_and_a_later_start_is_allowed(tmp_path: Path) -> None:
    healthy, broken = BrokenProfilingEngine(), BrokenProfilingEngine(fail_stop=True)
    profiler = Profiler([broken, healthy], Telemetry(TelemetryOptions()), tmp_path)
    profiler.start(seconds=60)
    profiler.close()
    assert_failed_safely(profiler, FINISH_FAILED, str(tmp_path))
    assert not healthy.profiling  # stopped although the engine before it failed to
    with pytest.raises(NotFoundError):
        profiler.result()
    broken.fail_stop = False
    profiler.start(seconds=60)
    profiler.close()
    assert profiler.status()["state"] == "done"


def test_only_the_newest_captures_stay_and_nothing_else_is_touched(tmp_path: Path) -> None:
    keep = 3
    legacy = tmp_path / "voxserve-profile-abcd1234"  # an earlier release's capture
    legacy.mkdir()
    others = [tmp_path / "notes.txt", tmp_path / "voxserve-profile-mine", tmp_path / "voxserve-profile-x.json"]
    others[0].write_text("mine")
    others[1].mkdir()
    others[2].write_text("{}")
    profiler = Profiler([FakeEngine()], Telemetry(TelemetryOptions()), tmp_path, keep=keep)
    made = []
    for _ in range(keep + 2):
        profiler.start(seconds=60)
        profiler.close()
        made.append(profiler.result().parent)
        assert len([path for path in captures(tmp_path) if path not in others]) <= keep
    assert [path for path in captures(tmp_path) if path not in others] == made[-keep:]
    assert all(path.exists() for path in others)
    assert profiler.result().exists()


def test_a_failed_capture_counts_toward_the_kept_ones(tmp_path: Path) -> None:
    engine = BrokenProfilingEngine()
    profiler = Profiler([engine], Telemetry(TelemetryOptions()), tmp_path, keep=1)
    profiler.start(seconds=60)
    profiler.close()
    engine.fail_stop = True
    profiler.start(seconds=60)
    profiler.close()
    assert profiler.status()["state"] == "failed"
    assert len(captures(tmp_path)) == 1
    assert not (captures(tmp_path)[0] / "voxserve-profile.json").exists()


def test_without_a_profile_dir_captures_go_to_a_private_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    profiler = Profiler([FakeEngine()], Telemetry(TelemetryOptions()), keep=1)
    for _ in range(2):
        profiler.start(seconds=60)
        profiler.close()
    [root] = tmp_path.iterdir()
    assert root.name.startswith("voxserve-profiles-")
    assert captures(root) == [profiler.result().parent]


def test_keep_is_checked_when_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Profiler([FakeEngine()], Telemetry(TelemetryOptions()), tmp_path, keep=0)
