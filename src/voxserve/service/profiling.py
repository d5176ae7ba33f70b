"""`Profiler`: one capture at a time of N requests or S seconds: the requests' stage spans, sampled Python
stacks and the engines' own profiles, merged into one Chrome trace with a summary."""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from voxserve.engines.base import Engine, EngineProfile
from voxserve.errors import ConfigError, ConflictError, InvalidRequestError, NotFoundError, VoxError
from voxserve.obs.chrome_trace import Clock, build_trace
from voxserve.obs.sampler import StackSample, StackSampler
from voxserve.obs.telemetry import Telemetry
from voxserve.obs.trace import RequestTrace

logger = logging.getLogger(__name__)

MAX_CAPTURE_S = 600.0
MAX_CAPTURE_REQUESTS = 1000
TRACE_FILE = "voxserve-profile.json"
CAPTURE_PREFIX = "voxserve-profile-"
# `voxserve-profile-<UTC start to the microsecond>-<mkdtemp's 8 characters>`, so names sort oldest first.
# Earlier releases wrote the bare mkdtemp name; those count as older than any stamped one.
_CAPTURE_NAME = re.compile(re.escape(CAPTURE_PREFIX) + r"(?:(\d{8}T\d{12}Z)-)?[a-z0-9_]{8}")
# What clients see when a capture fails: no paths, no exception text; the log has those.
NO_DIRECTORY = "could not create a capture directory in profile_dir; see the server log"
START_FAILED = "the capture could not start; see the server log"
FINISH_FAILED = "the capture could not be finished; see the server log"


class Profiler:
    """States: `idle` (never captured), `running`, `finishing` (merging profiles), `done`, `failed` (`error` says
    what went wrong in words fit for a client; the log has the details). Every state but `running` and
    `finishing` accepts a new capture.

    Each capture writes into its own directory under `directory` (a private temp dir when None). When a capture
    ends, done or failed, only the newest `keep` capture directories there stay; nothing else in `directory`
    is touched."""

    def __init__(
        self, engines: Sequence[Engine], telemetry: Telemetry, directory: Path | None = None, *, keep: int = 5
    ) -> None:
        if keep < 1:
            raise ConfigError("profile_keep must be at least 1", param="profile_keep")
        self._engines = engines
        self._telemetry = telemetry
        self._directory = directory
        self._keep = keep
        self._lock = threading.Lock()
        self._state = "idle"
        self._error = ""
        self._capture = 0  # numbers captures, so a late timer or thread cannot end a later capture
        self._target_requests: int | None = None
        self._limit_s = 0.0
        self._started_at = 0.0
        self._stopped_at = 0.0
        self._traces: list[RequestTrace] = []
        self._sampler = StackSampler()
        self._clock = Clock(0.0, 0)
        self._timer: threading.Timer | None = None
        self._result_path: Path | None = None
        self._directory_in_use: Path | None = None

    def start(self, requests: int | None = None, seconds: float | None = None) -> dict[str, object]:
        """Begin a capture that ends after `requests` finished speech requests or `seconds`, whichever is first
        (`seconds` alone, or `requests` alone within `MAX_CAPTURE_S`). Blocks while engines reload their models
        with profiling on, so call it off the event loop. A capture that cannot start raises `VoxError` and
        leaves the profiler `failed`."""
        _check_bounds(requests, seconds)
        capture = self._claim(requests, seconds)
        directory = self._open_directory()
        try:
            self._begin(capture, directory)
        except Exception as exc:
            logger.exception("profile capture in %s could not start", directory)
            self._undo_start()
            self._fail(START_FAILED)
            self._prune()
            raise VoxError(START_FAILED) from exc
        return self.status()

    def status(self) -> dict[str, object]:
        with self._lock:
            running = self._state == "running"
            elapsed = (time.monotonic() if running else self._stopped_at) - self._started_at
            return {
                "state": self._state,
                "requests_captured": len(self._traces),
                "target_requests": self._target_requests,
                "limit_s": self._limit_s or None,
                "elapsed_s": round(elapsed, 3) if self._state != "idle" else None,
                "error": self._error or None,
                "result": "GET /diagnostics/profiler/result" if self._state == "done" else None,
            }

    def result(self) -> Path:
        """The file holding the merged Chrome trace of the last finished capture."""
        with self._lock:
            state, path = self._state, self._result_path
        if state in ("running", "finishing"):
            raise ConflictError(f"the capture is still {state}; poll GET /diagnostics/profiler/status")
        if path is None:
            raise NotFoundError("no finished profile capture; start one with POST /diagnostics/profiler/start")
        return path

    def close(self) -> None:
        """Stop a capture still running (server shutdown)."""
        with self._lock:
            running, capture = self._state == "running", self._capture
        if running:
            self._finish(capture)

    def _claim(self, requests: int | None, seconds: float | None) -> int:
        with self._lock:
            if self._state in ("running", "finishing"):
                raise ConflictError(f"a profile capture is already {self._state}; see GET /diagnostics/profiler/status")
            self._capture += 1
            self._state, self._error, self._traces, self._result_path = "running", "", [], None
            self._target_requests, self._limit_s = requests, seconds or MAX_CAPTURE_S
            self._started_at = self._stopped_at = time.monotonic()
            self._sampler, self._timer, self._directory_in_use = StackSampler(), None, None
            return self._capture

    def _open_directory(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        try:
            root = self._root()
            directory = Path(tempfile.mkdtemp(prefix=f"{CAPTURE_PREFIX}{stamp}-", dir=root))
        except Exception as exc:
            logger.exception("cannot create a profile capture directory in %s", self._directory or "the temp dir")
            self._fail(NO_DIRECTORY)
            raise VoxError(NO_DIRECTORY) from exc
        with self._lock:
            self._directory_in_use = directory
        return directory

    def _root(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="voxserve-profiles-"))
        self._directory.mkdir(parents=True, exist_ok=True)
        return self._directory

    def _begin(self, capture: int, directory: Path) -> None:
        for engine in self._engines:
            engine.start_profiling(directory)
        timer = threading.Timer(self._limit_s, self._finish, args=(capture,))
        timer.daemon = True
        with self._lock:
            self._started_at, self._timer = time.monotonic(), timer
        self._clock = Clock(time.perf_counter(), time.time_ns())
        self._sampler.start()
        timer.start()
        self._telemetry.add_listener(self._on_request)

    def _on_request(self, trace: RequestTrace) -> None:
        with self._lock:
            if self._state != "running":
                return
            self._traces.append(trace)
            done = self._target_requests is not None and len(self._traces) >= self._target_requests
            capture = self._capture
        if done:
            # Merging reads the engines' profiles from disk: not on the event loop that called us.
            threading.Thread(target=self._finish, args=(capture,), daemon=True).start()

    def _finish(self, capture: int) -> None:
        with self._lock:
            if self._state != "running" or capture != self._capture:
                return
            self._state, self._stopped_at = "finishing", time.monotonic()
            directory = self._directory_in_use
        try:
            if directory is None:  # close() while start() was still making the directory
                raise RuntimeError("the capture ended before its directory was made")
            path = self._write_trace(directory)
        except Exception:
            logger.exception("profile capture in %s could not be finished", directory)
            self._fail(FINISH_FAILED)
        else:
            with self._lock:
                self._state, self._result_path = "done", path
                captured = len(self._traces)
            logger.info("profile capture done: %d requests, %s", captured, path)
        self._prune()

    def _write_trace(self, directory: Path) -> Path:
        samples, profiles = self._stop_capture()
        with self._lock:
            traces = list(self._traces)
        capture = {
            "duration_s": round(self._stopped_at - self._started_at, 3),
            "sample_interval_s": self._sampler.interval_s,
            # Names only: the trace is served to clients, the directory it came from is the server's business.
            "engine_profiles": [profile.path.name for profile in profiles],
        }
        trace = build_trace(self._clock, traces, samples, profiles, self._sampler.interval_s, capture)
        path = directory / TRACE_FILE
        path.write_text(json.dumps(trace, separators=(",", ":")), encoding="utf-8")
        return path

    def _stop_capture(self) -> tuple[list[StackSample], list[EngineProfile]]:
        """Undo what `_begin` did; the engines stop even when the sampler fails to."""
        with self._lock:
            timer = self._timer
        if timer is not None:
            timer.cancel()
        self._telemetry.remove_listener(self._on_request)
        try:
            samples = self._sampler.stop()
        finally:
            profiles = self._stop_engines()
        return samples, profiles

    def _undo_start(self) -> None:
        try:
            self._stop_capture()
        except Exception:
            logger.exception("cleaning up after a profile capture that could not start failed")

    def _stop_engines(self) -> list[EngineProfile]:
        """Every engine's profiles; an engine that fails to stop does not keep the others profiling."""
        profiles: list[EngineProfile] = []
        failed = []
        for engine in self._engines:
            try:
                profiles += engine.stop_profiling()
            except Exception:
                logger.exception("engine %s could not stop profiling", engine.name)
                failed.append(engine.name)
        if failed:
            raise RuntimeError(f"engines could not stop profiling: {', '.join(failed)}")
        return profiles

    def _fail(self, message: str) -> None:
        with self._lock:
            self._state, self._error, self._stopped_at = "failed", message, time.monotonic()

    def _prune(self) -> None:
        """Delete all but the newest `keep` capture directories; never the capture in use."""
        with self._lock:
            root = self._directory
            in_use = self._directory_in_use if self._state in ("running", "finishing") else None
        if root is None:
            return
        try:
            captures = _capture_directories(root)
        except OSError:
            logger.warning("cannot list the profile captures in %s", root, exc_info=True)
            return
        for directory in captures[: -self._keep]:
            if directory != in_use:
                _delete(directory)


def _check_bounds(requests: int | None, seconds: float | None) -> None:
    if requests is None and seconds is None:
        raise InvalidRequestError("give requests=N or seconds=S", param="requests")
    if requests is not None and not 1 <= requests <= MAX_CAPTURE_REQUESTS:
        raise InvalidRequestError(f"requests must be 1..{MAX_CAPTURE_REQUESTS}", param="requests")
    if seconds is not None and not 0 < seconds <= MAX_CAPTURE_S:
        raise InvalidRequestError(f"seconds must be in (0, {MAX_CAPTURE_S:g}]", param="seconds")


def _capture_directories(root: Path) -> list[Path]:
    """The directories in `root` named as `Profiler` names its captures, oldest first. Links are left alone."""
    found = []
    for entry in root.iterdir():
        match = _CAPTURE_NAME.fullmatch(entry.name)
        if match and not entry.is_symlink() and entry.is_dir():
            found.append((match.group(1) or "", entry.name, entry))
    return [entry for _, _, entry in sorted(found)]


def _delete(directory: Path) -> None:
    try:
        shutil.rmtree(directory)
    except OSError:
        logger.warning("cannot delete the old profile capture %s", directory, exc_info=True)
    else:
        logger.info("deleted the old profile capture %s", directory)
