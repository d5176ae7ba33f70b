"""`Profiler`: one capture at a time of N requests or S seconds: the requests' stage spans, sampled Python
stacks and the engines' own profiles, merged into one Chrome trace with a summary."""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from voxserve.engines.base import Engine, EngineProfile
from voxserve.errors import ConflictError, InvalidRequestError, NotFoundError
from voxserve.obs.chrome_trace import Clock, build_trace
from voxserve.obs.sampler import StackSampler
from voxserve.obs.telemetry import Telemetry
from voxserve.obs.trace import RequestTrace

logger = logging.getLogger(__name__)

MAX_CAPTURE_S = 600.0
MAX_CAPTURE_REQUESTS = 1000
TRACE_FILE = "voxserve-profile.json"


class Profiler:
    """States: `idle` (never captured), `running`, `finishing` (merging profiles), `done`, `failed`."""

    def __init__(self, engines: Sequence[Engine], telemetry: Telemetry, directory: Path | None = None) -> None:
        self._engines = engines
        self._telemetry = telemetry
        self._directory = directory
        self._lock = threading.Lock()
        self._state = "idle"
        self._error = ""
        self._target_requests: int | None = None
        self._limit_s = 0.0
        self._started_at = 0.0
        self._stopped_at = 0.0
        self._traces: list[RequestTrace] = []
        self._sampler = StackSampler()
        self._clock = Clock(0.0, 0)
        self._timer: threading.Timer | None = None
        self._result_path: Path | None = None
        self._directory_in_use = Path()

    def start(self, requests: int | None = None, seconds: float | None = None) -> dict[str, object]:
        """Begin a capture that ends after `requests` finished speech requests or `seconds`, whichever is first
        (`seconds` alone, or `requests` alone within `MAX_CAPTURE_S`). Blocks while engines reload their models
        with profiling on, so call it off the event loop."""
        if requests is None and seconds is None:
            raise InvalidRequestError("give requests=N or seconds=S", param="requests")
        if requests is not None and not 1 <= requests <= MAX_CAPTURE_REQUESTS:
            raise InvalidRequestError(f"requests must be 1..{MAX_CAPTURE_REQUESTS}", param="requests")
        if seconds is not None and not 0 < seconds <= MAX_CAPTURE_S:
            raise InvalidRequestError(f"seconds must be in (0, {MAX_CAPTURE_S:g}]", param="seconds")
        with self._lock:
            if self._state in ("running", "finishing"):
                raise ConflictError(f"a profile capture is already {self._state}; see GET /diagnostics/profiler/status")
            self._state, self._error, self._traces, self._result_path = "running", "", [], None
            self._target_requests, self._limit_s = requests, seconds or MAX_CAPTURE_S
        directory = self._directory_in_use = Path(tempfile.mkdtemp(prefix="voxserve-profile-", dir=self._directory))
        try:
            for engine in self._engines:
                engine.start_profiling(directory)
        except Exception as exc:
            self._stop_engines()
            self._fail(exc)
            raise
        self._sampler = StackSampler()
        self._clock = Clock(time.perf_counter(), time.time_ns())
        self._started_at = time.monotonic()
        self._sampler.start()
        self._telemetry.add_listener(self._on_request)
        self._timer = threading.Timer(self._limit_s, self._finish, args=(directory,))
        self._timer.daemon = True
        self._timer.start()
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
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            running = self._state == "running"
        if running:
            self._finish(self._directory_in_use)

    def _on_request(self, trace: RequestTrace) -> None:
        with self._lock:
            if self._state != "running":
                return
            self._traces.append(trace)
            done = self._target_requests is not None and len(self._traces) >= self._target_requests
        if done:
            # Merging reads the engines' profiles from disk: not on the event loop that called us.
            threading.Thread(target=self._finish, args=(self._directory_in_use,), daemon=True).start()

    def _finish(self, directory: Path) -> None:
        with self._lock:
            if self._state != "running":
                return
            self._state = "finishing"
            self._stopped_at = time.monotonic()
        if self._timer is not None:
            self._timer.cancel()
        self._telemetry.remove_listener(self._on_request)
        samples = self._sampler.stop()
        try:
            profiles = self._stop_engines()
            with self._lock:
                traces = list(self._traces)
            capture = {
                "duration_s": round(self._stopped_at - self._started_at, 3),
                "sample_interval_s": self._sampler.interval_s,
                "engine_profiles": [str(profile.path) for profile in profiles],
            }
            trace = build_trace(self._clock, traces, samples, profiles, self._sampler.interval_s, capture)
            path = directory / TRACE_FILE
            path.write_text(json.dumps(trace, separators=(",", ":")), encoding="utf-8")
        except Exception as exc:
            logger.exception("profile capture failed")
            self._fail(exc)
            return
        with self._lock:
            self._state, self._result_path = "done", path
        logger.info("profile capture done: %d requests, %s", len(traces), path)

    def _stop_engines(self) -> list[EngineProfile]:
        return [profile for engine in self._engines for profile in engine.stop_profiling()]

    def _fail(self, exc: Exception) -> None:
        with self._lock:
            self._state, self._error = "failed", str(exc)
            self._stopped_at = time.monotonic()
