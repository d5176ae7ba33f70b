"""Soak and fault test of a real `voxserve serve` on 127.0.0.1: an interleaved mix of every kind of request for
`--duration-s`, then deadlines, injected engine faults and `kill -9` during voice registration. Every response
must be an expected outcome for its kind, and the server must neither grow (RSS) nor leak (descriptors, threads,
queued work) nor lose or half-keep a voice.

Each phase has its own server (own data dir, a free loopback port, its log under `--log-dir`):

- soak: `--concurrency` clients send an interleaved mix until `--duration-s` or `--max-requests`, whichever
  comes first: speech in all six formats, streamed, buffered and SSE; cache hits (a fixed set of texts, warmed
  first) and bypasses; clients that hang up after the first audio or while or right after sending a long text;
  conversions and voice registrations (references made by the server itself; some deleted again); a corpus of
  bad input. Every `--burst-every-s` a burst of long texts overflows `max_queue_size` (sized so the regular mix
  alone never can). RSS, descriptors and threads are taken after the warm-up (`WARMUP_REQUESTS`) and after the
  load, both after `--idle-s` of idleness; then probes check that queue room and conversion slots were given back.
- deadline: one worker, `request_timeout_s` 2: long texts must end in 504 (buffered) or a stream cut at its
  deadline, and nothing may run long past its deadline.
- fault: `VOXSERVE_FAULT_INJECTION=raise=0.05,hang=0.01,garbage=0.02`: 500 `engine_error` (fixed message), 504
  and streams that end early are expected; the server stays up, nothing hangs, and a clean request works after.
- crash: `kill -9` while a voice registers (when its staging directory appears, after a random delay, right after
  sending, when its directory is renamed into place), restart on the same data dir: every voice registered
  before is listed and speaks, no directory is left without its voice, SQLite passes `PRAGMA integrity_check`.

One file by ownership; it runs about `--duration-s` plus three to four minutes for the other phases.

    .venv/bin/python benchmarks/soak.py [--duration-s 1200] [--max-requests 5000] -o docs/bench/soak.json

Exits 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import random
import shlex
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from voxserve.audio.decode import decode_audio
from voxserve.bench.corpus import load_corpus
from voxserve.bench.probe import ProcessProbe
from voxserve.bench.records import percentiles
from voxserve.errors import VoxError
from voxserve.frontend.normalize import normalize_text
from voxserve.frontend.segment import segment_text
from voxserve.process import lower_thread_priority
from voxserve.service.diagnostics import machine, versions

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).with_name("corpus.txt")
VOXSERVE = str(Path(sys.executable).with_name("voxserve"))
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm"}  # fmt: skip
BUILTIN = "en_US-joe-medium"
ERROR_KEYS = {"message", "type", "param", "code"}
BYPASS = {"Cache-Control": "no-store"}
REQUEST_BUDGET_S = 60.0  # a request still running (or silent) this long counts as hung
WARMUP_REQUESTS = 100
RSS_GROWTH_LIMIT = 0.05
BURST_SIZE = 24
BURST_GRACE_S = 1.0  # a burst's reservations close just after its last byte reaches the client
SEGMENTING = {"first_segment_max_chars": 24, "max_segment_chars": 150}  # the server's defaults
KEPT_VOICES = 4  # registered voices kept alive at most (beyond the anchor) in the soak
DEADLINE = {"timeout_s": 2.0, "margin_s": 3.0}  # margin: a segment already in the engine finishes first
FAULT = {"spec": "raise=0.05,hang=0.01,garbage=0.02", "hang_s": 3.0, "timeout_s": 5.0, "margin_s": 3.0}
FAULT_CODES = {"engine_error", "deadline_exceeded"}
KILL_MODES = ("staging", "random", "sent", "renamed")
REFERENCE_TEXT = ("Welcome back! You have three new messages and one missed call. The library closes early today, "
                  "so return your books before five o'clock.")  # fmt: skip
SOURCE_TEXT = "Please hold while I connect you to the next available agent."
NOTES = [
    "obs/metrics.py has no in-flight gauge, only voxserve_queue_depth_segments and "
    "voxserve_queue_pending_audio_seconds; requests in flight are counted instead as the requests this script sent "
    "minus voxserve_requests_total (every finished HTTP request), which must be 0 once idle.",
    "Queue room held by admitted requests is not exported; the queue_room probe checks it: a text with more "
    "segments than max_queue_size is admitted only when nothing is queued or held.",
    "Figures are taken after --idle-s without load and one request with a sync dependency: anyio prunes its "
    "thread-pool workers idle for 10 s on its next use, so that pool is at one thread at both points.",
    "crash: a kill -9 while a voice is written leaves its hidden staging directory (.voice_*.partial); the "
    "server removes such directories only once they are an hour old (storage/voices.py, STALE_PARTIAL_S), as "
    "another process may be writing one, so they are listed per round as partial_dirs, not counted as orphans.",
    "429 queue_full is expected of burst requests, and of any request that overlapped a burst (admission is "
    "global); conversions and registrations are sent at most max_concurrent_conversions - 1 at a time, so a 429 "
    "there means a slot was not given back.",
    "The soak server's caches get small budgets (SOAK_CACHE_ENV) so they are full by the end of the warm-up: RSS "
    "growth after it is then not a cache filling its budget (with the default 64 MiB audio cache a 20-minute run "
    "is still filling it). Each cache's occupancy is in the figures at both points (cache_sizes).",
]
# The load generator shares the server's cores; below the server's workers (`worker_niceness`) it measures the
# server, not a contest for CPU between the two.
LOAD_NICENESS = 19
SOAK_CACHE_ENV = {"VOXSERVE_AUDIO_CACHE_BYTES": str(4 << 20), "VOXSERVE_VOICE_CACHE_SIZE": "8"}
HTML = b"<!DOCTYPE html><html><body>not audio</body></html>"
FFCONCAT = b"ffconcat version 1.0\nfile x.wav\n"


# --- servers -----------------------------------------------------------------------------------------------------


class Server:
    """`voxserve serve` on a free 127.0.0.1 port with its own data dir; each start logs to its own file. Counts
    the HTTP requests sent to it, for comparison with the requests it says it finished."""

    def __init__(self, name: str, env: dict[str, str], data_dir: Path, log_dir: Path) -> None:
        self.name, self.env, self.data_dir, self.log_dir = name, env, data_dir, log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.logs: list[Path] = []
        self.sent = 0
        self._lock = threading.Lock()

    def count_sent(self) -> None:
        with self._lock:
            self.sent += 1

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, ready_timeout_s: float = 180.0) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = self.log_dir / f"{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("VOXSERVE_")}
        env = {**inherited, "VOXSERVE_DATA_DIR": str(self.data_dir), **self.env}
        command = [VOXSERVE, "serve", "--host", "127.0.0.1", "--port", str(port)]
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} server exited before it was ready; see {log}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    self.count_sent()
                    return
                self.count_sent()
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} server not ready in {ready_timeout_s:.0f} s; see {log}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_problems(self) -> dict[str, Any]:
        """Tracebacks and ERROR/CRITICAL lines in its logs, with the first few distinct ones."""
        lines = [line for log in self.logs for line in log.read_text(errors="replace").splitlines()]
        bad = [line for line in lines if "Traceback" in line or " ERROR " in line or "CRITICAL" in line]
        return {"tracebacks": sum("Traceback" in line for line in lines), "error_lines": len(bad),
                "first": list(dict.fromkeys(line[:300] for line in bad))[:8],
                "logs": [str(log) for log in self.logs]}  # fmt: skip


def process_figures(pid: int) -> dict[str, Any]:
    """RSS, open descriptors (by kind) and threads, from /proc."""
    proc = Path(f"/proc/{pid}")
    targets = []
    for entry in (proc / "fd").iterdir():
        with contextlib.suppress(OSError):
            targets.append(os.readlink(entry))
    status = (proc / "status").read_text().splitlines()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS:", "RssAnon:"))}
    kinds = Counter(target.split(":")[0] if ":[" in target else Path(target).name for target in targets)
    return {"rss_bytes": kb["VmRSS"] * 1024, "rss_anon_bytes": kb["RssAnon"] * 1024, "fds": len(targets),
            "threads": len(list((proc / "task").iterdir())), "fd_kinds": dict(sorted(kinds.items()))}  # fmt: skip


# --- requests ----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Reply:
    status: int = 0
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    latency_s: float = 0.0
    error: str = ""  # a transport failure; starts with "hung" when the request outlived its budget


def exchange(server: Server, client: httpx.Client, method: str, path: str, *, first_piece: bool = False,
             budget_s: float = REQUEST_BUDGET_S, **request: Any) -> Reply:  # fmt: skip
    """One request with its body read (or only its first piece, then the connection is dropped)."""
    server.count_sent()
    reply, pieces = Reply(), []
    started = time.perf_counter()
    try:
        with client.stream(method, path, **request) as response:
            reply.status, reply.headers = response.status_code, response.headers
            for piece in response.iter_raw():
                pieces.append(piece)
                if (first_piece and piece) or time.perf_counter() - started > budget_s:
                    break
    except httpx.TimeoutException as exc:
        reply.error = f"hung: {type(exc).__name__} after {time.perf_counter() - started:.1f} s"
    except httpx.HTTPError as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    reply.latency_s = time.perf_counter() - started
    reply.body = b"".join(pieces)
    if not reply.error and reply.latency_s > budget_s:
        reply.error = f"hung: still running after {budget_s:.0f} s"
    return reply


def send_and_leave(server: Server, body: bytes, *, mid_body: bool) -> Reply:
    """A speech request written to a raw socket that is closed at once: after the whole body, or halfway."""
    server.count_sent()
    port = int(server.url.rsplit(":", 1)[1])
    head = (f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    reply = Reply()
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(head + (body[: len(body) // 2] if mid_body else body))
    except OSError as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    reply.latency_s = time.perf_counter() - started
    return reply


def new_client(server: Server, **options: Any) -> httpx.Client:
    timeout = httpx.Timeout(REQUEST_BUDGET_S, connect=10.0)
    return httpx.Client(base_url=server.url, timeout=timeout, **options)


def scrape(server: Server) -> dict[str, float]:
    """`/metrics` as `name{label="value",...}` -> value (labels sorted), on a connection closed after it."""
    with new_client(server, headers={"Connection": "close"}) as client:
        reply = exchange(server, client, "GET", "/metrics")
    if reply.status != 200:
        raise RuntimeError(f"/metrics answered {reply.status or reply.error}")
    values = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def metric_total(metrics: dict[str, float], name: str, where: Callable[[str], bool] = lambda _: True) -> float:
    return sum(value for key, value in metrics.items() if key.split("{")[0] == name and where(key))


def speech_body(text: str, voice: str, fmt: str, mode: str) -> dict[str, object]:
    body: dict[str, object] = {"model": "tts-1", "input": text, "voice": voice, "response_format": fmt}
    if mode == "buffered":
        body["stream"] = False
    elif mode == "sse":
        body["stream_format"] = "sse"
    return body


def segments(text: str) -> int:
    return len(segment_text(normalize_text(text), **SEGMENTING))


# --- judging -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """One request: what it was, what came back, and whether that is an expected outcome for its kind."""

    kind: str
    variant: str
    label: str  # "200", "429 queue_full", "hung", ...
    expected: bool
    latency_s: float
    detail: str = ""
    at_s: float = 0.0
    request_id: str = ""


def error_of(reply: Reply) -> tuple[dict[str, Any], str]:
    """The OpenAI error object of a non-200 reply, and what is wrong with its shape ("" if nothing)."""
    try:
        error = json.loads(reply.body)["error"]
    except (ValueError, KeyError, TypeError):
        return {}, f"not an OpenAI error body: {reply.body[:120]!r}"
    if not isinstance(error, dict) or set(error) != ERROR_KEYS:
        return {}, f"error keys {sorted(error) if isinstance(error, dict) else error!r}"
    return error, ""


def fixed_500_problem(error: dict[str, Any], request_id: str) -> str:
    """A 500 shows a fixed message that quotes the request id and nothing of the failure."""
    fixed = f"the server failed on this request; quote request id {request_id}"
    return "" if error.get("message") == fixed else f"500 message not the fixed one: {error.get('message')!r}"


def judge(kind: str, variant: str, reply: Reply, *, allowed: Collection[tuple[int, str]] = (),
          check: Callable[[Reply], str] | None = None, late_s: float | None = None) -> Outcome:  # fmt: skip
    """200 passes `check` (a problem or ""); any other status must be in `allowed` as (status, code), in OpenAI's
    error shape; a 500 must carry the fixed message. Past `late_s` nothing counts as expected."""
    request_id = reply.headers.get("x-request-id", "")
    if reply.error:
        label, expected, detail = ("hung" if reply.error.startswith("hung") else "transport error"), False, reply.error
    elif reply.status == 200:
        detail = check(reply) if check else ""
        label, expected = ("200" if not detail else "200 bad body"), not detail
    else:
        error, detail = error_of(reply)
        if not detail and reply.status == 500:
            detail = fixed_500_problem(error, request_id)
        label = f"{reply.status} {error.get('code') or '?'}"
        expected = not detail and (reply.status, error.get("code")) in allowed
        if not expected and not detail:
            detail = str(error.get("message", ""))[:200]
    if late_s is not None and reply.latency_s > late_s:
        label, expected = f"{label} late", False
        detail = f"{detail}; took {reply.latency_s:.1f} s, bound {late_s:.1f} s".lstrip("; ")
    return Outcome(kind, variant, label, expected, reply.latency_s, detail, request_id=request_id)


def audio_problem(audio: bytes, fmt: str) -> str:
    """The container's signature at the start of the body (a cut stream still starts right)."""
    if not audio:
        return "no audio"
    head = audio[:12]
    ok = {
        "mp3": head[:3] == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0),
        "opus": head[:4] == b"OggS",
        "aac": head[0] == 0xFF and head[1] & 0xF6 == 0xF0,
        "flac": head[:4] == b"fLaC",
        "wav": head[:4] == b"RIFF" and head[8:12] == b"WAVE",
        "pcm": len(audio) % 2 == 0,
    }[fmt]
    return "" if ok else f"not {fmt}: starts {head!r}"


def decode_problem(audio: bytes, fmt: str) -> str:
    try:
        seconds = decode_audio(audio, CONTENT_TYPES[fmt]).duration_s
    except VoxError as exc:
        return f"undecodable {fmt}: {exc.message}"
    return "" if seconds > 0 else f"{fmt} decodes to no audio"


def sse_audio(body: bytes, request_id: str, *, cut_allowed: bool) -> tuple[bytes, str]:
    """The audio of an SSE body and what is wrong with it: it must end with `speech.audio.done`, or (where a cut
    is allowed) with an error event for an engine failure or a deadline."""
    try:
        events = [json.loads(block[6:]) for block in body.split(b"\n\n") if block.startswith(b"data: ")]
        audio = b"".join(base64.b64decode(event["audio"]) for event in events if event["type"] == "speech.audio.delta")
    except (ValueError, KeyError, TypeError) as exc:
        return b"", f"malformed SSE: {exc}"
    last = events[-1] if events else {}
    if last.get("type") == "speech.audio.done":
        return audio, ""
    error = last.get("error", {}) if last.get("type") == "error" else {}
    if cut_allowed and error.get("code") in FAULT_CODES:
        fixed = fixed_500_problem(error, request_id) if error.get("code") == "engine_error" else ""
        return audio, fixed
    return audio, f"SSE ended with {json.dumps(last)[:160]}"


def speech_problem(reply: Reply, fmt: str, mode: str, *, cache: tuple[str, ...] = ("bypass",),
                   cut_allowed: bool = False) -> str:  # fmt: skip
    wanted = "text/event-stream" if mode == "sse" else CONTENT_TYPES[fmt]
    if not reply.headers.get("content-type", "").startswith(wanted):
        return f"content-type {reply.headers.get('content-type')!r}, wanted {wanted}"
    if reply.headers.get("x-voxserve-cache") not in cache:
        return f"X-Voxserve-Cache {reply.headers.get('x-voxserve-cache')!r}, wanted {' or '.join(cache)}"
    audio = reply.body
    if mode == "sse":
        audio, problem = sse_audio(reply.body, reply.headers.get("x-request-id", ""), cut_allowed=cut_allowed)
        if problem:
            return problem
    return audio_problem(audio, fmt)


class Ledger:
    """Every outcome of one phase (thread-safe), and what they add up to."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.started = time.perf_counter()
        self._lock = threading.Lock()

    def add(self, outcome: Outcome, started: float | None = None) -> None:
        outcome.at_s = round((started or time.perf_counter()) - self.started, 3)
        with self._lock:
            self.outcomes.append(outcome)

    def __len__(self) -> int:
        return len(self.outcomes)

    def unexpected(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.expected]

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, dict[str, Any]] = {}
        for kind in sorted({outcome.kind for outcome in self.outcomes}):
            mine = [outcome for outcome in self.outcomes if outcome.kind == kind]
            latency = percentiles([outcome.latency_s for outcome in mine])
            kinds[kind] = {
                "requests": len(mine),
                "outcomes": dict(Counter(outcome.label for outcome in mine).most_common()),
                "variants": dict(Counter(outcome.variant for outcome in mine).most_common()),
                "unexpected": sum(not outcome.expected for outcome in mine),
                "latency_s": {name: round(value, 4) for name, value in latency.items()} | {"max": max_latency(mine)},
            }
        return {"requests": len(self.outcomes), "unexpected": len(self.unexpected()), "by_kind": kinds}

    def failures(self, limit: int = 100) -> list[dict[str, Any]]:
        return [asdict(outcome) for outcome in self.unexpected()[:limit]]


def max_latency(outcomes: list[Outcome]) -> float:
    return round(max((outcome.latency_s for outcome in outcomes), default=0.0), 3)


# --- the soak ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadInput:
    name: str
    method: str
    path: str
    request: dict[str, Any]
    status: int
    code: str
    upload: bool = False  # passes the conversion gate (conversions and registrations are admitted by slots)


def bad_inputs(source: bytes, reference: bytes) -> list[BadInput]:
    """Requests a client gets wrong, and the status and code each must get (README, Errors)."""
    speech, conversions, voices = "/v1/audio/speech", "/v1/audio/conversions", "/v1/audio/voices"
    raw = {"headers": {"Content-Type": "application/json"}}

    def spoken(**fields: object) -> dict[str, Any]:
        return {"json": {"input": "Hello.", "voice": "alloy", **fields}}

    def upload(content: bytes, **fields: str) -> dict[str, Any]:
        return {"data": fields, "files": {"file": ("recording.wav", content, "audio/wav")}}

    def fetch(**fields: str) -> dict[str, Any]:
        return {"json": fields}

    big = b'{"input": "' + b"a" * (1 << 20) + b'", "voice": "alloy"}'
    return [
        BadInput("malformed_json", "POST", speech, {"content": b'{"input": "hi",', **raw}, 400, "invalid_json"),
        BadInput("not_an_object", "POST", speech, {"content": b"[1, 2]", **raw}, 400, "invalid_body"),
        BadInput("input_not_a_string", "POST", speech, spoken(input=123), 400, "invalid_value"),
        BadInput("speed_not_a_number", "POST", speech, spoken(speed="fast"), 400, "invalid_value"),
        BadInput("speed_out_of_range", "POST", speech, spoken(speed=10), 400, "invalid_value"),
        BadInput("unknown_format", "POST", speech, spoken(response_format="ogg"), 400, "invalid_value"),
        BadInput("missing_voice", "POST", speech, {"json": {"input": "Hello."}}, 400, "missing_required_parameter"),
        BadInput("unknown_voice", "POST", speech, spoken(voice="no-such-voice"), 404, "voice_not_found"),
        BadInput("unknown_model", "POST", speech, spoken(model="tts-9"), 404, "model_not_found"),
        BadInput("empty_input", "POST", speech, spoken(input=""), 400, "invalid_value"),
        BadInput("blank_input", "POST", speech, spoken(input="   "), 400, "invalid_value"),
        BadInput("huge_input", "POST", speech, spoken(input="a" * 5000), 413, "input_too_long"),
        BadInput("huge_body", "POST", speech, {"content": big, **raw}, 413, "request_too_large"),
        BadInput("conversion_html", "POST", conversions, upload(HTML, voice=BUILTIN), 400, "not_audio", True),
        BadInput("conversion_ffconcat", "POST", conversions, upload(FFCONCAT, voice=BUILTIN), 400, "invalid_audio",
                 True),
        BadInput("conversion_bad_port", "POST", conversions, fetch(source_url="http://h:99999/", voice=BUILTIN),
                 400, "invalid_url", True),
        BadInput("conversion_ftp_url", "POST", conversions, fetch(source_url="ftp://example.com/a.wav",
                 voice=BUILTIN), 400, "invalid_url", True),
        BadInput("conversion_internal_url", "POST", conversions, fetch(source_url="http://127.0.0.1:1/a.wav",
                 voice=BUILTIN), 400, "url_not_allowed", True),
        BadInput("conversion_unknown_voice", "POST", conversions, upload(source, voice="no-such-voice"), 404,
                 "voice_not_found", True),
        BadInput("conversion_no_target", "POST", conversions, upload(source), 400, "invalid_value", True),
        BadInput("voice_html", "POST", voices, upload(HTML, name="soak-bad-html"), 400, "not_audio", True),
        BadInput("voice_ffconcat", "POST", voices, upload(FFCONCAT, name="soak-bad-ff"), 400, "invalid_audio", True),
        BadInput("voice_builtin_name", "POST", voices, upload(reference, name=BUILTIN), 409, "voice_exists", True),
        BadInput("voice_bad_url", "POST", voices, fetch(name="soak-bad-url", url="http://h:99999/"), 400,
                 "invalid_url", True),
        BadInput("delete_unknown_voice", "DELETE", f"{voices}/voice_0123456789abcdef", {}, 404, "voice_not_found"),
        BadInput("unknown_route", "GET", "/v1/nothing-here", {}, 404, "not_found"),
        BadInput("unsupported_media_type", "POST", conversions,
                 {"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 400, "unsupported_media_type",
                 True),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Texts:
    corpus: list[str]
    cached: list[str]  # the cache-hit set: each text in every format is warmed before the measurement starts
    long: str  # for clients that hang up: many segments, most never run
    burst: str  # many short sentences: many segments for little audio

    @classmethod
    def build(cls, corpus: list[str]) -> Texts:
        by_length = sorted(corpus, key=len)
        return cls(corpus, cached=by_length[2:8], long=" ".join(by_length[-3:]), burst=" ".join(by_length[:10]))

    def regular_peak_segments(self, concurrency: int) -> int:
        """The most segments the regular mix can hold at once: every client on its longest text, plus one
        hung-up request the server has not noticed yet, plus the base voices' profiles (12 s passages)."""
        longest = max(segments(text) for text in [*self.corpus, self.long])
        return concurrency * longest + segments(self.long) + 8


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    max_requests: int
    concurrency: int
    burst_every_s: float
    deadline_s: float
    fault_s: float
    kills: int
    idle_s: float
    gc_probe: bool
    seed: int
    phases: tuple[str, ...]
    log_dir: Path


class Soak:
    """The soak phase: one server, `concurrency` clients drawing kinds of request at random, bursts beside them."""

    WEIGHTS: ClassVar[dict[str, int]] = {
        "speech": 34, "cache_hit": 12, "hangup_stream": 7, "hangup_submit": 7, "conversion": 8, "registration": 4,
        "bad_input": 22, "catalog": 6,
    }  # fmt: skip

    def __init__(self, server: Server, texts: Texts, options: Options) -> None:
        self.server, self.texts, self.options = server, texts, options
        self.ledger = Ledger()
        self.bursts: list[list[float]] = []  # [start, end] in perf_counter time; end inf while running
        self.samples: list[dict[str, Any]] = []
        self.reference = self.source = b""
        self.anchor = ""
        self.kept: deque[str] = deque()
        self.gate = threading.Semaphore(1)
        self.conversion_slots = 2
        self.bad: list[BadInput] = []
        self._serial = itertools.count(1)
        self._decodes = itertools.count()
        self._loads = itertools.count()
        self._bad_cases = itertools.count()
        self._cache_bodies: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()
        self.warm = False

    # setup and load

    def setup(self) -> dict[str, Any]:
        """The recordings (made by the server), the anchor voice that conversions use, and the conversion gate."""
        with new_client(self.server) as client:
            self.reference = self._speak_wav(client, REFERENCE_TEXT)
            self.source = self._speak_wav(client, SOURCE_TEXT)
            reply = self._register(client, "soak-anchor", self.reference)
            if reply.status != 200:
                raise RuntimeError(f"could not register the anchor voice: {reply.status} {reply.body[:200]!r}")
            self.anchor = json.loads(reply.body)["id"]
            config = json.loads(exchange(self.server, client, "GET", "/diagnostics/performance").body)["config"]
        # One fewer than the server's slots: a finished conversion's slot is given back just after its last byte.
        self.conversion_slots = int(config.get("max_concurrent_conversions", 2))
        self.gate = threading.Semaphore(max(1, self.conversion_slots - 1))
        self.bad = bad_inputs(self.source, self.reference)
        seconds = {name: decode_audio(data, "audio/wav").duration_s
                   for name, data in (("reference", self.reference), ("source", self.source))}  # fmt: skip
        if not 6 <= seconds["reference"] <= 10:
            raise RuntimeError(f"the reference is {seconds['reference']:.1f} s, not 6-10 s")
        return {"recordings_s": {name: round(value, 2) for name, value in seconds.items()},
                "max_concurrent_conversions": self.conversion_slots, "anchor_voice": self.anchor}  # fmt: skip

    def _speak_wav(self, client: httpx.Client, text: str) -> bytes:
        reply = exchange(self.server, client, "POST", "/v1/audio/speech", headers=BYPASS,
                         json=speech_body(text, BUILTIN, "wav", "buffered"))  # fmt: skip
        if reply.status != 200:
            raise RuntimeError(f"speech for a recording failed: {reply.status or reply.error}")
        return reply.body

    def _register(self, client: httpx.Client, name: str, reference: bytes) -> Reply:
        return exchange(self.server, client, "POST", "/v1/audio/voices", data={"name": name},
                        files={"file": ("reference.wav", reference, "audio/wav")})  # fmt: skip

    def warm_cache(self) -> None:
        """Every text of the cache-hit set in every format, once, so later requests of that kind are all hits."""
        combos = list(itertools.product(self.texts.cached, FORMATS))
        with ThreadPoolExecutor(self.options.concurrency) as pool:
            list(pool.map(lambda combo: self._cache_request(combo[0], combo[1], "stream"), combos))

    def run_load(self, until: Callable[[], bool], burst_at: Callable[[int], float]) -> None:
        """The clients and the burst timer until `until()`; `burst_at(n)` is when burst n starts (seconds in)."""
        load = next(self._loads)
        threads = [threading.Thread(target=self._client_loop, args=(index, until, load), daemon=True)
                   for index in range(self.options.concurrency)]  # fmt: skip
        threads.append(threading.Thread(target=self._burst_loop, args=(until, burst_at), daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _client_loop(self, index: int, until: Callable[[], bool], load: int) -> None:
        lower_thread_priority(LOAD_NICENESS)
        rng = random.Random(self.options.seed * 1000 + load * 100 + index)
        kinds, weights = list(self.WEIGHTS), list(self.WEIGHTS.values())
        with new_client(self.server) as client:
            while not until():
                getattr(self, f"_{rng.choices(kinds, weights)[0]}")(client, rng)

    def _burst_loop(self, until: Callable[[], bool], burst_at: Callable[[int], float]) -> None:
        lower_thread_priority(LOAD_NICENESS)  # and the burst threads it starts
        started = time.monotonic()
        for index in itertools.count():
            while time.monotonic() - started < burst_at(index):
                if until():
                    return
                time.sleep(0.2)
            self.burst()

    def burst(self) -> None:
        """`BURST_SIZE` long texts at once: some must get 429 `queue_full`, with Retry-After."""
        window = [time.perf_counter(), float("inf")]
        with self._lock:
            self.bursts.append(window)
        with ThreadPoolExecutor(BURST_SIZE) as pool:
            list(pool.map(self._burst_one, range(BURST_SIZE)))
        window[1] = time.perf_counter() + BURST_GRACE_S

    def _burst_one(self, index: int) -> None:
        fmt, mode = FORMATS[index % len(FORMATS)], ("stream", "buffered")[index % 2]
        started = time.perf_counter()
        with new_client(self.server) as client:
            reply = exchange(self.server, client, "POST", "/v1/audio/speech", headers=BYPASS,
                             json=speech_body(self.texts.burst, "alloy", fmt, mode))  # fmt: skip
        outcome = judge("burst", f"{fmt}/{mode}", reply, allowed={(429, "queue_full")},
                        check=lambda r: speech_problem(r, fmt, mode))  # fmt: skip
        if outcome.label.startswith("429") and not reply.headers.get("retry-after", "").isdigit():
            outcome.expected, outcome.detail = False, "429 without a Retry-After in seconds"
        self.ledger.add(outcome, started)

    def _in_burst(self, started: float, ended: float) -> bool:
        with self._lock:
            return any(start <= ended and end >= started for start, end in self.bursts)

    def _record(self, outcome: Outcome, started: float) -> None:
        """Admission is global: a request that overlapped a burst may be refused with 429 like the burst's own."""
        if (not outcome.expected and outcome.label == "429 queue_full" and
                self._in_burst(started, started + outcome.latency_s)):  # fmt: skip
            outcome.expected, outcome.detail = True, "429 while a burst filled the queue"
        self.ledger.add(outcome, started)

    # the kinds of request

    def _speech(self, client: httpx.Client, rng: random.Random) -> None:
        fmt = rng.choice(FORMATS)
        mode = rng.choices(("stream", "buffered", "sse"), (5, 3, 2))[0]
        voice = rng.choices(("alloy", BUILTIN, "espeak:en-us", self.anchor), (5, 2, 2, 1))[0]
        headers = rng.choice((BYPASS, {"Cache-Control": "no-cache"}, {"X-Voxserve-Cache": "off"}))
        started = time.perf_counter()
        reply = exchange(self.server, client, "POST", "/v1/audio/speech", headers=headers,
                         json=speech_body(rng.choice(self.texts.corpus), voice, fmt, mode))  # fmt: skip
        kind_of_voice = "custom" if voice == self.anchor else voice
        self._record(judge("speech", f"{fmt}/{mode}/{kind_of_voice}", reply,
                           check=lambda r: self._full_audio_problem(r, fmt, mode)), started)  # fmt: skip

    def _full_audio_problem(self, reply: Reply, fmt: str, mode: str, cache: tuple[str, ...] = ("bypass",)) -> str:
        """The response's checks, and every tenth body decoded in full."""
        problem = speech_problem(reply, fmt, mode, cache=cache)
        if problem or next(self._decodes) % 10:
            return problem
        audio = sse_audio(reply.body, "", cut_allowed=False)[0] if mode == "sse" else reply.body
        return decode_problem(audio, fmt)

    def _cache_hit(self, client: httpx.Client, rng: random.Random) -> None:
        self._cache_request(rng.choice(self.texts.cached), rng.choice(FORMATS), rng.choice(("stream", "buffered")),
                            client)  # fmt: skip

    def _cache_request(self, text: str, fmt: str, mode: str, client: httpx.Client | None = None) -> None:
        """Once warm, every one is a hit, and a hit's bytes equal the first body seen for that text, format, mode."""
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            client = client or stack.enter_context(new_client(self.server))
            reply = exchange(self.server, client, "POST", "/v1/audio/speech",
                             json=speech_body(text, "alloy", fmt, mode))  # fmt: skip
        cache = ("hit",) if self.warm else ("hit", "miss")
        outcome = judge("cache_hit", f"{fmt}/{mode}", reply,
                        check=lambda r: self._full_audio_problem(r, fmt, mode, cache))  # fmt: skip
        if outcome.label == "200":
            first = self._cache_bodies.setdefault((text, fmt, mode), reply.body)
            if reply.headers.get("x-voxserve-cache") == "hit" and first != reply.body:
                outcome.label, outcome.expected, outcome.detail = "200 bad body", False, "a hit differs from before"
        self._record(outcome, started)

    def _hangup_stream(self, client: httpx.Client, rng: random.Random) -> None:
        fmt = rng.choice(FORMATS)
        started = time.perf_counter()
        reply = exchange(self.server, client, "POST", "/v1/audio/speech", first_piece=True, headers=BYPASS,
                         json=speech_body(self.texts.long, "alloy", fmt, "stream"))  # fmt: skip
        self._record(judge("hangup_stream", fmt, reply, check=lambda r: audio_problem(r.body, fmt)), started)

    def _hangup_submit(self, client: httpx.Client, rng: random.Random) -> None:
        mid_body = rng.random() < 0.5
        body = json.dumps(speech_body(self.texts.long, "alloy", rng.choice(FORMATS), "stream")).encode()
        started = time.perf_counter()
        reply = send_and_leave(self.server, body, mid_body=mid_body)
        variant = "mid_body" if mid_body else "after_body"
        self._record(Outcome("hangup_submit", variant, "transport error" if reply.error else "sent",
                             not reply.error, reply.latency_s, reply.error), started)  # fmt: skip

    def _conversion(self, client: httpx.Client, rng: random.Random) -> None:
        fmt, stream = rng.choice(FORMATS), rng.random() < 0.5
        voice = rng.choice((BUILTIN, self.anchor))
        fields = {"voice": voice, "response_format": fmt, "stream": str(stream).lower()}
        started = time.perf_counter()
        with self.gate:
            reply = exchange(self.server, client, "POST", "/v1/audio/conversions", data=fields,
                             files={"file": ("source.wav", self.source, "audio/wav")})  # fmt: skip
        variant = f"{fmt}/{'stream' if stream else 'buffered'}/{'builtin' if voice == BUILTIN else 'custom'}"
        self._record(judge("conversion", variant, reply, check=lambda r: audio_problem(r.body, fmt)), started)

    def _registration(self, client: httpx.Client, rng: random.Random) -> None:
        """Register a voice, read it back, and delete it again (or keep it, up to `KEPT_VOICES`)."""
        name = f"soak-{next(self._serial)}"
        started = time.perf_counter()
        with self.gate:
            reply = self._register(client, name, self.reference)
        outcome = judge("registration", "upload", reply, check=_voice_problem)
        self._record(outcome, started)
        if outcome.label != "200":
            return
        voice_id = json.loads(reply.body)["id"]
        self._voice_request(client, "voice_get", "GET", voice_id, 200)
        with self._lock:
            self.kept.append(voice_id)
            doomed = self.kept.popleft() if rng.random() < 0.6 or len(self.kept) > KEPT_VOICES else None
        if doomed:
            self._voice_request(client, "voice_delete", "DELETE", doomed, 200)
            self._voice_request(client, "voice_get", "GET", doomed, 404)

    def _voice_request(self, client: httpx.Client, kind: str, method: str, voice_id: str, status: int) -> None:
        started = time.perf_counter()
        reply = exchange(self.server, client, method, f"/v1/audio/voices/{voice_id}")
        gone = status == 404
        allowed = {(404, "voice_not_found")} if gone else set()
        outcome = judge(kind, "deleted" if gone else "exists", reply, allowed=allowed,
                        check=lambda r: _voice_answer_problem(r, method, gone))  # fmt: skip
        self._record(outcome, started)

    def _bad_input(self, client: httpx.Client, rng: random.Random) -> None:
        case = self.bad[next(self._bad_cases) % len(self.bad)]  # in turn: every case, equally often
        started = time.perf_counter()
        with self.gate if case.upload else contextlib.nullcontext():
            reply = exchange(self.server, client, case.method, case.path, **case.request)
        outcome = judge("bad_input", case.name, reply, allowed={(case.status, case.code)},
                        check=lambda _: f"200 for bad input (wanted {case.status} {case.code})")  # fmt: skip
        self._record(outcome, started)

    def _catalog(self, client: httpx.Client, rng: random.Random) -> None:
        path = rng.choice(("/v1/audio/voices", "/v1/models", "/health"))
        started = time.perf_counter()
        reply = exchange(self.server, client, "GET", path)

        def problem(r: Reply) -> str:
            if path == "/v1/audio/voices" and self.anchor not in {v["id"] for v in json.loads(r.body)["data"]}:
                return "the anchor voice is not listed"
            return ""

        self._record(judge("catalog", path, reply, check=problem), started)

    # measurements

    def sample(self, until: Callable[[], bool], every_s: float = 5.0) -> None:
        """RSS, descriptors, threads and the queue gauge every `every_s`, for the report's time series."""
        started = time.monotonic()
        while not until():
            with contextlib.suppress(Exception):
                metrics = scrape(self.server)
                figures = process_figures(self.server.pid)
                self.samples.append({"t_s": round(time.monotonic() - started, 1), "rss_mb": figures["rss_bytes"] >> 20,
                                     "fds": figures["fds"], "threads": figures["threads"],
                                     "queue_depth": metrics.get("voxserve_queue_depth_segments")})  # fmt: skip
            for _ in range(int(every_s * 5)):
                if until():
                    return
                time.sleep(0.2)


def settle(server: Server, idle_s: float, gc_probe: bool = False) -> dict[str, Any]:
    """Figures of the server after `idle_s` without load. First one request that runs a sync dependency in anyio's
    thread pool, which prunes its workers idle for 10 s, so that pool is back to one thread; then the metrics, then
    /proc. With `gc_probe`, also /proc after a `gc.collect()` run inside the server (`after_gc`), and after glibc
    has then given its free memory back to the system (`after_trim`): what the allocator kept, not what is live."""
    time.sleep(idle_s)
    with new_client(server, headers={"Connection": "close"}) as client:
        exchange(server, client, "GET", "/v1/audio/voices")
    sent = server.sent
    metrics = scrape(server)
    time.sleep(0.5)  # the scrape's connection closes on the server's side
    figures = snapshot(server, metrics, sent)
    if gc_probe:
        figures["after_gc"] = {"gdb": collect_garbage(server.pid), **process_figures(server.pid)}
        figures["after_trim"] = {"gdb": trim_heap(server.pid), **process_figures(server.pid)}
    return figures


def collect_garbage(pid: int) -> str:
    """`gc.collect()` inside the server through gdb (a diagnostic: what only the cyclic collector would free)."""
    return in_server(pid, ["call (int)PyGILState_Ensure()", 'call (int)PyRun_SimpleString("import gc; gc.collect()")',
                           "call (void)PyGILState_Release($1)"])  # fmt: skip


def trim_heap(pid: int) -> str:
    """glibc's `malloc_trim(0)` inside the server: free memory every arena holds goes back to the system."""
    return in_server(pid, ["call (int)malloc_trim(0)"])


def in_server(pid: int, calls: list[str]) -> str:
    """Run gdb `calls` in the attached server; "ok" or why not."""
    command = ["gdb", "-p", str(pid), "-batch", *itertools.chain.from_iterable(("-ex", call) for call in calls)]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"gdb failed: {exc}"
    time.sleep(1.0)  # threads of freed codecs exit
    return "ok" if run.returncode == 0 else f"gdb exited {run.returncode}: {run.stderr[-200:]}"


def snapshot(server: Server, metrics: dict[str, float], sent: int) -> dict[str, Any]:
    """Figures of an idle server: /proc, queue gauges, and requests sent but not finished (the server has no
    in-flight gauge; `voxserve_requests_total` counts every finished HTTP request)."""
    finished = metric_total(metrics, "voxserve_requests_total")
    return {
        **process_figures(server.pid),
        "queue_depth_segments": metrics.get("voxserve_queue_depth_segments"),
        "queue_pending_audio_seconds": metrics.get("voxserve_queue_pending_audio_seconds"),
        "requests_sent": sent,
        "requests_finished": int(finished),
        "requests_unfinished": sent - int(finished),
        "cache_sizes": {name: value for name, value in metrics.items() if name.startswith("voxserve_cache_size")},
    }


def _voice_answer_problem(reply: Reply, method: str, gone: bool) -> str:
    if gone:
        return "a deleted voice is still there"
    if method == "DELETE" and json.loads(reply.body).get("deleted") is not True:
        return f"a delete answered {reply.body[:120]!r}"
    return ""


def _voice_problem(reply: Reply) -> str:
    try:
        voice = json.loads(reply.body)
    except ValueError:
        return "not JSON"
    return "" if str(voice.get("id", "")).startswith("voice_") and voice.get("features") else f"odd voice {voice}"


def soak_phase(options: Options, console: Console) -> dict[str, Any]:
    corpus = load_corpus(CORPUS)
    texts = Texts.build(corpus)
    queue_size = texts.regular_peak_segments(options.concurrency)
    env = {"VOXSERVE_MAX_QUEUE_SIZE": str(queue_size), **SOAK_CACHE_ENV}
    with tempfile.TemporaryDirectory(prefix="voxserve-soak-") as data_dir:
        server = Server("soak", env, Path(data_dir), options.log_dir)
        server.start()
        try:
            return _run_soak(Soak(server, texts, options), queue_size, console)
        finally:
            server.stop()


def _run_soak(soak: Soak, queue_size: int, console: Console) -> dict[str, Any]:
    options, server = soak.options, soak.server
    started = time.monotonic()
    out_of_time = lambda: time.monotonic() - started >= options.duration_s  # noqa: E731
    out_of_requests = lambda: len(soak.ledger) >= options.max_requests  # noqa: E731
    setup = soak.setup()
    soak.warm_cache()
    soak.warm = True
    warm = lambda: len(soak.ledger) >= WARMUP_REQUESTS and soak.bursts and soak.bursts[-1][1] < float("inf")  # noqa: E731
    soak.run_load(lambda: warm() or out_of_time(), burst_at=lambda n: 5.0 if n == 0 else float("inf"))
    warmup_requests = len(soak.ledger)
    console.print(f"soak: warm after {warmup_requests} requests, {time.monotonic() - started:.0f} s; settling")
    baseline = settle(server, options.idle_s, options.gc_probe)
    load_started = time.monotonic()
    done = lambda: out_of_time() or out_of_requests()  # noqa: E731
    probe = ProcessProbe(server.pid)
    probe.start()
    sampler = threading.Thread(target=soak.sample, args=(done,), daemon=True)
    sampler.start()
    soak.run_load(done, burst_at=lambda n: options.burst_every_s * (n + 0.5))
    usage = probe.stop()
    sampler.join()
    load_s = time.monotonic() - load_started
    console.print(f"soak: load ended after {len(soak.ledger)} requests, {time.monotonic() - started:.0f} s; settling")
    end = settle(server, options.idle_s, options.gc_probe)
    end_metrics = scrape(server)
    probes = end_probes(soak, queue_size)
    alive = server.alive()
    return {
        "server_env": server.env, "max_queue_size": queue_size, "setup": setup,
        "warmup_requests": warmup_requests, "load_s": round(load_s, 1),
        "bursts": len(soak.bursts), "duration_s": round(time.monotonic() - started, 1),
        "burst_windows_at_s": [[round(edge - soak.ledger.started, 3) for edge in window] for window in soak.bursts],
        "figures": {"after_warmup": baseline, "end": end,
                    "peak_rss_bytes_during_load": usage.peak_rss_bytes, "server_cpu_cores": usage.cpu_cores},
        "server_counters": counters(end_metrics), "probes": probes, "server_alive": alive,
        "rss_trend": rss_trend(soak.samples), "samples": soak.samples, "ledger": soak.ledger,
        "log": server.log_problems(),
    }  # fmt: skip


def rss_trend(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS over the load, for telling growth from the allocator's swings: the least-squares slope, and the median
    of the first and the last quarter of the samples (context; the criterion compares the idle figures)."""
    if len(samples) < 8:
        return {"samples": len(samples)}
    t_min = np.array([sample["t_s"] / 60 for sample in samples])
    rss = np.array([sample["rss_mb"] for sample in samples], dtype=float)
    quarter = len(samples) // 4
    return {"samples": len(samples), "slope_mb_per_min": round(float(np.polyfit(t_min, rss, 1)[0]), 2),
            "first_quarter_median_mb": float(np.median(rss[:quarter])),
            "last_quarter_median_mb": float(np.median(rss[-quarter:]))}  # fmt: skip


def counters(metrics: dict[str, float]) -> dict[str, Any]:
    """What the server counted: finished requests by status, failures, cut streams, refusals, deadlines."""
    by_status: Counter[str] = Counter()
    server_errors: Counter[str] = Counter()  # 5xx by route; a /ready 503 while loading is what it should say
    for key, value in metrics.items():
        if key.startswith("voxserve_requests_total{"):
            status, route = (key.split(f'{label}="')[1].split('"')[0] for label in ("status", "route"))
            by_status[status] += int(value)
            if status.startswith("5") and (route, status) != ("/ready", "503"):
                server_errors[f"{route} {status}"] += int(value)
    names = ("voxserve_engine_failures_total", "voxserve_truncated_responses_total", "voxserve_requests_rejected_total",
             "voxserve_requests_timed_out_total", "voxserve_requests_cancelled_total",
             "voxserve_segments_cancelled_total", "voxserve_segments_expired_total")  # fmt: skip
    totals = {name: metric_total(metrics, name) for name in names}
    truncated = {key: value for key, value in metrics.items() if key.startswith("voxserve_truncated_responses_total")}
    return {"requests_by_status": dict(sorted(by_status.items())), "server_errors": dict(server_errors), **totals,
            "truncated_by_route_code": truncated}  # fmt: skip


def end_probes(soak: Soak, queue_size: int) -> dict[str, Any]:
    """After the final figures: queue room and conversion slots all given back, a clean request, the voices."""
    server = soak.server
    with new_client(server) as client:
        clean = exchange(server, client, "POST", "/v1/audio/speech", headers=BYPASS,
                         json=speech_body("Hello again.", "alloy", "wav", "buffered"))  # fmt: skip
        listed = exchange(server, client, "GET", "/v1/audio/voices")
        with ThreadPoolExecutor(soak.conversion_slots) as pool:
            slots = list(pool.map(lambda _: _probe_conversion(soak), range(soak.conversion_slots)))
        # More one-word sentences than the queue holds: an idle server admits it only if nothing is held.
        text = " ".join(["Yes."] * (queue_size + 8))
        room = exchange(server, client, "POST", "/v1/audio/speech", first_piece=True, headers=BYPASS,
                        json=speech_body(text, "alloy", "pcm", "stream"))  # fmt: skip
    custom = {voice["id"] for voice in json.loads(listed.body)["data"] if voice.get("type") == "custom"}
    wanted = {soak.anchor, *soak.kept}
    on_disk = {path.name for path in (server.data_dir / "voices").iterdir()}
    return {
        "queue_room_returned": {"status": room.status, "segments": queue_size + 8, "passed": room.status == 200},
        "conversion_slots_returned": {"statuses": slots, "passed": slots == [200] * len(slots)},
        "clean_request": {"status": clean.status,
                          "passed": clean.status == 200 and not audio_problem(clean.body, "wav")},
        "voices": {"listed_custom": len(custom), "expected": len(wanted), "missing": sorted(wanted - custom),
                   "unexpected": sorted(custom - wanted), "dirs_without_voice": sorted(on_disk - custom),
                   "passed": custom == wanted and on_disk == custom},
    }  # fmt: skip


def _probe_conversion(soak: Soak) -> int:
    """A conversion of the ~8 s reference (long enough that all the probes overlap)."""
    with new_client(soak.server) as client:
        return exchange(soak.server, client, "POST", "/v1/audio/conversions", data={"voice": BUILTIN},
                        files={"file": ("reference.wav", soak.reference, "audio/wav")}).status  # fmt: skip


# --- deadline and fault phases -----------------------------------------------------------------------------------


RequestMaker = Callable[[Server, httpx.Client, random.Random], Outcome]


def side_phase(name: str, env: dict[str, str], options: Options, seconds: float, make: RequestMaker,
               settle_s: float) -> dict[str, Any]:  # fmt: skip
    """A server of its own under `make`'s requests from four clients for `seconds`; figures before and after."""
    with tempfile.TemporaryDirectory(prefix=f"voxserve-{name}-") as data_dir:
        server = Server(name, env, Path(data_dir), options.log_dir)
        server.start()
        try:
            return _run_side(server, options, seconds, make, settle_s)
        finally:
            server.stop()


def _run_side(server: Server, options: Options, seconds: float, make: RequestMaker, settle_s: float) -> dict[str, Any]:
    ledger = Ledger()
    with ThreadPoolExecutor(12) as pool:  # 12 at once first, so the thread pools have grown to their working size
        list(pool.map(lambda index: _clean_request(server, tries=1, text=f"Warming up, part {index}."), range(12)))
    before = settle(server, settle_s, options.gc_probe)
    stop_at = time.monotonic() + seconds

    def client_loop(index: int) -> None:
        rng = random.Random(options.seed * 1000 + index)
        with new_client(server) as client:
            while time.monotonic() < stop_at and server.alive():
                started = time.perf_counter()
                ledger.add(make(server, client, rng), started)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(client_loop, range(4)))
    alive_after_load = server.alive()
    after = settle(server, settle_s, options.gc_probe)
    clean = _clean_request(server)
    metrics = scrape(server)
    with new_client(server) as client:
        performance = json.loads(exchange(server, client, "GET", "/diagnostics/performance").body)
    injected = {name: info.get("fault_injection") for name, info in performance.get("engines", {}).items()
                if isinstance(info, dict) and info.get("fault_injection")}  # fmt: skip
    return {"server_env": server.env, "seconds": seconds, "before": before, "after": after,
            "server_alive": alive_after_load and server.alive(), "clean_request": clean,
            "server_counters": counters(metrics), "faults_injected": injected, "ledger": ledger,
            "log": server.log_problems()}  # fmt: skip


def _clean_request(server: Server, tries: int = 5, text: str = "Hello again.") -> dict[str, Any]:
    """A short request after the phase; under fault injection a few tries (each fails ~8% of the time)."""
    statuses = []
    with new_client(server) as client:
        for _ in range(tries):
            reply = exchange(server, client, "POST", "/v1/audio/speech", headers=BYPASS,
                             json=speech_body(text, "alloy", "wav", "buffered"))  # fmt: skip
            statuses.append(reply.status or reply.error)
            if reply.status == 200 and not audio_problem(reply.body, "wav"):
                return {"statuses": statuses, "passed": True}
    return {"statuses": statuses, "passed": False}


def deadline_request(texts: Texts) -> RequestMaker:
    """Long texts buffered (504) or streamed (cut at the deadline), and short ones queued behind them."""
    bound_s = DEADLINE["timeout_s"] + DEADLINE["margin_s"]

    def make(server: Server, client: httpx.Client, rng: random.Random) -> Outcome:
        variant = rng.choice(("long/buffered", "long/stream", "short/buffered"))
        text = texts.long if variant.startswith("long") else rng.choice(texts.corpus[:6])
        mode = variant.split("/")[1]
        reply = exchange(server, client, "POST", "/v1/audio/speech", headers=BYPASS,
                         json=speech_body(text, "alloy", "wav", mode))  # fmt: skip
        return judge("deadline", variant, reply, allowed={(504, "deadline_exceeded")}, late_s=bound_s,
                     check=lambda r: audio_problem(r.body, "wav"))  # fmt: skip

    return make


def fault_request(texts: Texts) -> RequestMaker:
    """Speech of every mode and format; 500 `engine_error`, 504 and cut streams are expected outcomes here."""
    bound_s = FAULT["timeout_s"] + FAULT["margin_s"]

    def make(server: Server, client: httpx.Client, rng: random.Random) -> Outcome:
        fmt, mode = rng.choice(FORMATS), rng.choice(("stream", "buffered", "sse"))
        reply = exchange(server, client, "POST", "/v1/audio/speech", headers=BYPASS,
                         json=speech_body(rng.choice(texts.corpus), "alloy", fmt, mode))  # fmt: skip
        return judge("fault", f"{fmt}/{mode}", reply, allowed={(500, "engine_error"), (504, "deadline_exceeded")},
                     late_s=bound_s, check=lambda r: speech_problem(r, fmt, mode, cut_allowed=True))  # fmt: skip

    return make


# --- kill -9 during registration ---------------------------------------------------------------------------------


def crash_phase(options: Options) -> dict[str, Any]:
    rng = random.Random(options.seed)
    env = {"VOXSERVE_ESPEAK_VOICES": "false", "VOXSERVE_WARMUP": "false"}
    with tempfile.TemporaryDirectory(prefix="voxserve-crash-") as data_dir:
        server = Server("crash", env, Path(data_dir), options.log_dir)
        server.start()
        try:
            return _run_crashes(server, options.kills, rng)
        finally:
            server.stop()


def _run_crashes(server: Server, kills: int, rng: random.Random) -> dict[str, Any]:
    with new_client(server) as client:
        reply = exchange(server, client, "POST", "/v1/audio/speech", headers=BYPASS,
                         json=speech_body(REFERENCE_TEXT, BUILTIN, "wav", "buffered"))  # fmt: skip
        reference = reply.body
        registered, seconds = {}, []
        for name in ("before-1", "before-2"):
            started = time.perf_counter()
            created = _register_json(server, client, name, reference)
            seconds.append(time.perf_counter() - started)
            registered[name] = created["id"]
    rounds = []
    for index in range(kills):
        mode = KILL_MODES[index % len(KILL_MODES)]
        killed = kill_during_registration(server, reference, f"crash-{index + 1}", mode, max(seconds), rng)
        server.start()
        check = recovery_check(server, registered, f"crash-{index + 1}", reference)
        rounds.append({**killed, **check})
    server.stop()
    final = sqlite_integrity(server.data_dir)
    return {"registration_s": [round(value, 3) for value in seconds], "rounds": rounds,
            "integrity_after_clean_stop": final, "voices_at_end": sorted(registered),
            "log": server.log_problems()}  # fmt: skip


def _register_json(server: Server, client: httpx.Client, name: str, reference: bytes) -> dict[str, Any]:
    reply = exchange(server, client, "POST", "/v1/audio/voices", data={"name": name},
                     files={"file": ("reference.wav", reference, "audio/wav")})  # fmt: skip
    if reply.status != 200:
        raise RuntimeError(f"registering {name} failed: {reply.status or reply.error} {reply.body[:200]!r}")
    return json.loads(reply.body)


def kill_during_registration(server: Server, reference: bytes, name: str, mode: str, registration_s: float,
                             rng: random.Random) -> dict[str, Any]:  # fmt: skip
    """Start registering `name`, then `kill -9` the server when `mode` says: when the voice's staging directory
    appears, after a random delay, right after the request went out, or when its directory is renamed into place.
    If the moment never comes (the registration answered first), the kill follows the answer."""
    voices = server.data_dir / "voices"
    known = set(os.listdir(voices))
    answer: dict[str, Any] = {}

    def register() -> None:
        with new_client(server) as client:
            reply = exchange(server, client, "POST", "/v1/audio/voices", data={"name": name},
                             files={"file": ("reference.wav", reference, "audio/wav")})  # fmt: skip
        answer["reply"] = reply.status or reply.error

    thread = threading.Thread(target=register, daemon=True)
    thread.start()
    started = time.perf_counter()
    moment = _wait_for_moment(mode, voices, known, thread, registration_s, rng)
    killed_after_s = time.perf_counter() - started
    server.kill()
    thread.join(timeout=30)
    return {"mode": mode, "moment": moment, "killed_after_s": round(killed_after_s, 4),
            "reply": answer.get("reply"), "new_entries_at_kill": sorted(set(os.listdir(voices)) - known)}  # fmt: skip


def _wait_for_moment(mode: str, voices: Path, known: set[str], thread: threading.Thread, registration_s: float,
                     rng: random.Random) -> str:  # fmt: skip
    if mode == "sent":
        time.sleep(0.005)
        return "5 ms after sending"
    if mode == "random":
        delay = rng.uniform(0.0, max(registration_s, 0.3) * 1.2)
        thread.join(timeout=delay)
        return f"random delay {delay * 1000:.0f} ms" if thread.is_alive() else "the answer came first"
    deadline = time.perf_counter() + 10 * max(registration_s, 1.0)
    while time.perf_counter() < deadline and thread.is_alive():
        new = set(os.listdir(voices)) - known
        if any(entry.startswith(".") == (mode == "staging") for entry in new):
            return f"{mode} directory seen"
        time.sleep(0.0005)
    return "the answer came first"


def recovery_check(server: Server, registered: dict[str, str], crash_name: str, reference: bytes) -> dict[str, Any]:
    """After the restart: every earlier voice listed, every listed voice speaks, every voice directory belongs to
    a listed voice, SQLite intact; the crashed name is either a whole voice or free to register again."""
    with new_client(server) as client:
        listed = {voice["name"]: voice["id"] for voice in
                  json.loads(exchange(server, client, "GET", "/v1/audio/voices").body)["data"]
                  if voice.get("type") == "custom"}  # fmt: skip
        silent = [name for name, voice_id in listed.items() if not _speaks(server, client, voice_id)]
        entries = os.listdir(server.data_dir / "voices")
        crash_listed = crash_name in listed
        reused = None
        if not crash_listed:
            reused = _register_json(server, client, crash_name, reference)["id"]
        registered[crash_name] = listed.get(crash_name) or reused or ""
    missing = [name for name, voice_id in registered.items() if name != crash_name and listed.get(name) != voice_id]
    orphans = sorted(entry for entry in entries if not entry.startswith(".") and entry not in listed.values())
    return {"listed": sorted(listed), "crash_voice_listed": crash_listed, "missing_before": missing,
            "silent_voices": silent, "orphan_dirs": orphans,
            "partial_dirs": sorted(entry for entry in entries if entry.startswith(".")),
            "crash_name_registered_again": reused is not None, "integrity": sqlite_integrity(server.data_dir),
            "passed": not missing and not silent and not orphans and
            sqlite_integrity(server.data_dir) == "ok"}  # fmt: skip


def _speaks(server: Server, client: httpx.Client, voice_id: str) -> bool:
    reply = exchange(server, client, "POST", "/v1/audio/speech", headers=BYPASS,
                     json=speech_body("Still here.", voice_id, "wav", "buffered"))  # fmt: skip
    return reply.status == 200 and not decode_problem(reply.body, "wav")


def sqlite_integrity(data_dir: Path) -> str:
    with contextlib.closing(sqlite3.connect(data_dir / "voxserve.sqlite3")) as db:
        return ";".join(row[0] for row in db.execute("PRAGMA integrity_check"))


# --- criteria, report --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Criterion:
    name: str
    passed: bool
    measured: Any
    limit: str


def soak_criteria(result: dict[str, Any]) -> list[Criterion]:
    ledger: Ledger = result["ledger"]
    start, end = result["figures"]["after_warmup"], result["figures"]["end"]
    growth = end["rss_bytes"] / start["rss_bytes"] - 1
    server_errors = result["server_counters"]["server_errors"]
    bursts = [outcome for outcome in ledger.outcomes if outcome.kind == "burst"]
    probes = result["probes"]
    return [
        Criterion("soak: every response expected for its kind", not ledger.unexpected(), len(ledger.unexpected()),
                  "0 unexpected"),
        Criterion("soak: no request hung", not _hung(ledger), len(_hung(ledger)), f"0 past {REQUEST_BUDGET_S:.0f} s"),
        Criterion("soak: server counted no 5xx", not server_errors, server_errors or 0,
                  "0 (also for clients that left; /ready 503 while loading aside)"),
        Criterion("soak: no stream cut short", result["server_counters"]["voxserve_truncated_responses_total"] == 0,
                  result["server_counters"]["voxserve_truncated_responses_total"], "0"),
        Criterion("soak: bursts got 429 queue_full", any(o.label == "429 queue_full" for o in bursts),
                  sum(o.label == "429 queue_full" for o in bursts), f">= 1 of {len(bursts)}"),
        Criterion("soak: RSS growth after warm-up", growth < RSS_GROWTH_LIMIT,
                  f"{start['rss_bytes'] >> 20} -> {end['rss_bytes'] >> 20} MiB ({growth:+.1%})",
                  f"< {RSS_GROWTH_LIMIT:.0%}"),
        Criterion("soak: open descriptors back to start", end["fds"] <= start["fds"], _change(start, end, "fds"),
                  "<= start"),
        Criterion("soak: threads back to start", end["threads"] <= start["threads"], _change(start, end, "threads"),
                  "<= start"),
        Criterion("soak: queue gauges back to 0",
                  not end["queue_depth_segments"] and not end["queue_pending_audio_seconds"],
                  f"depth {end['queue_depth_segments']}, pending {end['queue_pending_audio_seconds']} s", "0"),
        Criterion("soak: no request left unfinished", end["requests_unfinished"] == 0, end["requests_unfinished"],
                  "sent - voxserve_requests_total = 0"),
        Criterion("soak: queue room all given back", probes["queue_room_returned"]["passed"],
                  probes["queue_room_returned"]["status"], "200 for a text longer than the queue"),
        Criterion("soak: conversion slots all given back", probes["conversion_slots_returned"]["passed"],
                  probes["conversion_slots_returned"]["statuses"], "all 200 at once"),
        Criterion("soak: clean request after", probes["clean_request"]["passed"], probes["clean_request"]["status"],
                  "200"),
        Criterion("soak: custom voices as registered, no stray dirs", probes["voices"]["passed"],
                  {key: value for key, value in probes["voices"].items() if key != "passed"}, "equal"),
        Criterion("soak: server stayed up", result["server_alive"], result["server_alive"], "alive"),
        Criterion("soak: no traceback in the server log", result["log"]["tracebacks"] == 0,
                  result["log"]["tracebacks"], "0"),
    ]  # fmt: skip


def _change(start: dict[str, Any], end: dict[str, Any], name: str) -> str:
    """`start -> end`, and the same after a gc.collect() in the server where `--gc-probe` took it."""
    change = f"{start[name]} -> {end[name]}"
    for probe, done in (("after_gc", "gc.collect()"), ("after_trim", "malloc_trim(0)")):
        if probe in start and probe in end:
            change += f" ({start[probe][name]} -> {end[probe][name]} after {done})"
    return change


def _hung(ledger: Ledger) -> list[Outcome]:
    return [outcome for outcome in ledger.outcomes if outcome.label == "hung"]


def side_criteria(name: str, result: dict[str, Any], bound_s: float) -> list[Criterion]:
    ledger: Ledger = result["ledger"]
    before, after = result["before"], result["after"]
    slowest = max_latency(ledger.outcomes)
    criteria = [
        Criterion(f"{name}: every response expected", not ledger.unexpected(), len(ledger.unexpected()),
                  "0 unexpected"),
        Criterion(f"{name}: every request ended by its deadline + margin", slowest <= bound_s, f"max {slowest} s",
                  f"<= {bound_s:.0f} s"),
        Criterion(f"{name}: server stayed up", result["server_alive"], result["server_alive"], "alive"),
        Criterion(f"{name}: clean request after", result["clean_request"]["passed"],
                  result["clean_request"]["statuses"], "200 (of up to 5 tries)"),
        Criterion(f"{name}: queue gauges back to 0",
                  not after["queue_depth_segments"] and not after["queue_pending_audio_seconds"],
                  f"depth {after['queue_depth_segments']}, pending {after['queue_pending_audio_seconds']} s", "0"),
        Criterion(f"{name}: descriptors and threads back", after["fds"] <= before["fds"] and
                  after["threads"] <= before["threads"],
                  f"fds {_change(before, after, 'fds')}, threads {_change(before, after, 'threads')}", "<= before"),
    ]  # fmt: skip
    if name == "deadline":
        timeouts = sum(outcome.label == "504 deadline_exceeded" for outcome in ledger.outcomes)
        criteria.append(Criterion("deadline: 504s happened", timeouts > 0, timeouts, ">= 1"))
    else:
        kinds = Counter()
        for counts in result["faults_injected"].values():
            kinds.update(counts)
        every = all(kinds[fault] > 0 for fault in ("raise", "hang", "garbage"))
        criteria.append(Criterion("fault: every kind of fault injected", every, dict(kinds), ">= 1 of each"))
    return criteria


def crash_criteria(result: dict[str, Any]) -> list[Criterion]:
    rounds = result["rounds"]
    return [
        Criterion("crash: earlier voices listed after every restart", not any(r["missing_before"] for r in rounds),
                  [r["missing_before"] for r in rounds], "none missing"),
        Criterion("crash: every listed voice speaks", not any(r["silent_voices"] for r in rounds),
                  [r["silent_voices"] for r in rounds], "none silent"),
        Criterion("crash: no voice directory without its voice", not any(r["orphan_dirs"] for r in rounds),
                  [r["orphan_dirs"] for r in rounds], "none"),
        Criterion("crash: SQLite integrity_check", all(r["integrity"] == "ok" for r in rounds)
                  and result["integrity_after_clean_stop"] == "ok",
                  [r["integrity"] for r in rounds] + [result["integrity_after_clean_stop"]], "ok"),
        Criterion("crash: kills landed mid-registration", any(r["reply"] != 200 for r in rounds),
                  [f"{r['mode']}: {r['moment']}" for r in rounds], ">= 1 before the answer"),
    ]  # fmt: skip


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return run.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "uncommitted": git("status", "--porcelain").splitlines()}


def phase_report(result: dict[str, Any]) -> dict[str, Any]:
    """A phase's result for JSON: the ledger becomes its summary and its unexpected outcomes."""
    shown = dict(result)
    ledger = shown.pop("ledger", None)
    if ledger is not None:
        shown["requests"] = ledger.summary()
        shown["failures"] = ledger.failures()
    return shown


def render(criteria: list[Criterion], phases: dict[str, dict[str, Any]], console: Console) -> None:
    table = Table(title="soak: requests by phase and kind")
    for column in ("phase", "kind", "requests", "unexpected", "outcomes", "p95 s", "max s"):
        table.add_column(column, justify="left" if column in ("phase", "kind", "outcomes") else "right")
    for phase, result in phases.items():
        for kind, figures in result.get("requests", {}).get("by_kind", {}).items():
            outcomes = ", ".join(f"{label} x{n}" for label, n in figures["outcomes"].items())
            latency = figures["latency_s"]
            table.add_row(phase, kind, str(figures["requests"]), str(figures["unexpected"]), outcomes[:70],
                          f"{latency.get('p95', 0):.2f}", f"{latency['max']:.2f}")  # fmt: skip
    console.print(table)
    table = Table(title="soak: criteria")
    for column in ("criterion", "measured", "limit", ""):
        table.add_column(column)
    for criterion in criteria:
        table.add_row(criterion.name, str(criterion.measured)[:70], criterion.limit,
                      "[green]pass[/green]" if criterion.passed else "[red]FAIL[/red]")  # fmt: skip
    console.print(table)


def run_phases(options: Options, console: Console) -> tuple[dict[str, dict[str, Any]], list[Criterion]]:
    texts = Texts.build(load_corpus(CORPUS))
    fault_env = {"VOXSERVE_FAULT_INJECTION": FAULT["spec"], "VOXSERVE_FAULT_HANG_S": str(FAULT["hang_s"]),
                 "VOXSERVE_REQUEST_TIMEOUT_S": str(FAULT["timeout_s"]), "VOXSERVE_ESPEAK_VOICES": "false"}  # fmt: skip
    deadline_env = {"VOXSERVE_WORKERS": "1", "VOXSERVE_REQUEST_TIMEOUT_S": str(DEADLINE["timeout_s"]),
                    "VOXSERVE_MAX_QUEUE_SIZE": "0", "VOXSERVE_ESPEAK_VOICES": "false"}  # fmt: skip
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "soak": lambda: soak_phase(options, console),
        "deadline": lambda: side_phase("deadline", deadline_env, options, options.deadline_s, deadline_request(texts),
                                       settle_s=max(options.idle_s, DEADLINE["margin_s"] + 2)),
        "fault": lambda: side_phase("fault", fault_env, options, options.fault_s, fault_request(texts),
                                    settle_s=max(options.idle_s, FAULT["hang_s"] + 2)),
        "crash": lambda: crash_phase(options),
    }  # fmt: skip
    judges: dict[str, Callable[[dict[str, Any]], list[Criterion]]] = {
        "soak": soak_criteria,
        "deadline": lambda r: side_criteria("deadline", r, DEADLINE["timeout_s"] + DEADLINE["margin_s"]),
        "fault": lambda r: side_criteria("fault", r, FAULT["timeout_s"] + FAULT["margin_s"]),
        "crash": crash_criteria,
    }
    phases, criteria = {}, []
    for name in options.phases:
        console.print(f"[bold]{name}[/bold] phase")
        try:
            result = runs[name]()
            criteria += judges[name](result)
            phases[name] = phase_report(result)
        except Exception as exc:  # a phase that cannot run is a failed criterion; the other phases still run
            phases[name] = {"error": f"{type(exc).__name__}: {exc}"}
            criteria.append(Criterion(f"{name}: phase ran", False, phases[name]["error"], "ran"))
    return phases, criteria


def parse_args() -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=1200.0, help="soak phase length, warm-up included")
    parser.add_argument("--max-requests", type=int, default=5000, help="soak phase request limit")
    parser.add_argument("--concurrency", type=int, default=6, help="soak clients besides the bursts")
    parser.add_argument("--burst-every-s", type=float, default=60.0)
    parser.add_argument("--deadline-s", type=float, default=20.0, help="length of the deadline phase's load")
    parser.add_argument("--fault-s", type=float, default=60.0, help="length of the fault phase's load")
    parser.add_argument("--kills", type=int, default=4, help="kill -9 rounds in the crash phase")
    parser.add_argument("--idle-s", type=float, default=12.0,
                        help="idle time before figures are taken (> anyio's 10 s worker idle limit)")  # fmt: skip
    parser.add_argument("--gc-probe", action="store_true",
                        help="also take figures after gc.collect() in the server (gdb, ptrace)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", default="soak,deadline,fault,crash")
    parser.add_argument("--log-dir", type=Path, help="server logs (default: a new temporary directory, kept)")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON report here")
    args = parser.parse_args()
    phases = tuple(phase.strip() for phase in args.phases.split(",") if phase.strip())
    if not set(phases) <= {"soak", "deadline", "fault", "crash"} or args.duration_s <= 0 or args.max_requests < 1:
        parser.error("--phases from soak,deadline,fault,crash; --duration-s > 0; --max-requests >= 1")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="voxserve-soak-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    options = Options(args.duration_s, args.max_requests, args.concurrency, args.burst_every_s, args.deadline_s,
                      args.fault_s, args.kills, args.idle_s, args.gc_probe, args.seed, phases, log_dir)  # fmt: skip
    return options, args.output


def main() -> None:
    options, output = parse_args()
    console = Console(width=140)
    console.print(f"server logs: {options.log_dir}")
    load_start, started = os.getloadavg(), time.monotonic()
    phases, criteria = run_phases(options, console)
    report = {
        "benchmark": "soak",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(sys.orig_argv),
        "passed": all(criterion.passed for criterion in criteria),
        "wall_s": round(time.monotonic() - started, 1),
        "machine": {**machine(), "load_average_1m_5m_15m": {"start": load_start, "end": os.getloadavg()}},
        "versions": versions(),
        "source": git_state(),
        "corpus": {"path": str(CORPUS.relative_to(ROOT)), "utterances": len(load_corpus(CORPUS))},
        "options": {**asdict(options), "log_dir": str(options.log_dir)},
        "notes": NOTES,
        "criteria": [asdict(criterion) for criterion in criteria],
        "phases": phases,
    }
    render(criteria, phases, console)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    verdict = "[green]all criteria met[/green]" if report["passed"] else "[red]criteria failed[/red]"
    console.print(f"{verdict} in {report['wall_s']:.0f} s")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
