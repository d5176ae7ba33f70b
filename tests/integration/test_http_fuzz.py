"""Fuzzing over HTTP: schemathesis generates requests, valid and invalid, from the server's own OpenAPI schema and
sends them to a fresh real server: open, with a key, and with a wrong key. No request may get a 5xx; every 4xx is
OpenAI's error shape (with a wrong key, always a 401); the server and every voice it listed are still there after.

Bounded for CI: a fixed number of cases per operation and mode (a few hundred in all), derandomized so every run
sends the same requests, and not shrunk: every distinct problem is collected and reported at once instead."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode, Response

from tests.conftest import ServerProcess, serve

pytestmark = pytest.mark.timeout(90)

# Seconds each: too slow for a fuzz (the diagnostics tests cover them).
SLOW_PATHS = ["/diagnostics/benchmark", "/diagnostics/profiler/start"]
# Open whatever the key: liveness, readiness, and /metrics to loopback clients (`metrics_auth = "remote"`).
KEYLESS_PATHS = ["/health", "/ready", "/metrics"]
# A settings key: `DELETE /v1/keys/{id}` cannot revoke it, so the fuzz cannot lock itself out.
FUZZ_KEY = "vx-fuzz-0123456789abcdef0123456789abcdef"
WRONG_KEY = "vx-fuzz-not-a-key-0000000000000000000000"
KEY_HEADERS = {"Authorization": f"Bearer {FUZZ_KEY}"}
CUSTOM_VOICE = "fuzz-voice"
REFERENCE_TEXT = (
    "Welcome back! You have three new messages and one missed call. "
    "The library closes early today, so return your books before five o'clock."
)
SPEECH_PATH = "/v1/audio/speech"
# Models and voices the server has, so that valid speech requests reach synthesis and conversion (generated names
# only get a 404); `None` keeps the generated ones, so unknown names are sent too.
SPEAKERS = [
    ("tts-1", CUSTOM_VOICE), ("tts-1", "alloy"), ("piper", "en_US-joe-medium"), ("gpt-4o-mini-tts", {"id": "nova"}),
    ("espeak", "de"), None,
]  # fmt: skip
# A longer input within the server's cap only costs synthesis time; one past it is kept, to be refused (413).
SHORT_INPUT_CHARS = 80
MAX_INPUT_CHARS = 4096
CASES_PER_OPERATION_AND_MODE = 20
REQUEST_TIMEOUT_S = 20
FUZZ_SETTINGS = settings(
    max_examples=CASES_PER_OPERATION_AND_MODE,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],
    # Each case is an HTTP round trip: slow by Hypothesis's measure, and not what this test is about.
    suppress_health_check=list(HealthCheck),
)
ERROR_KEYS = {"message", "type", "param", "code"}
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*:")

Judge = Callable[[Response], str | None]


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis caches character tables and constants even without a database: in scratch, not the checkout."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


def start(env: dict[str, str], log_dir: Path, headers: dict[str, str]) -> Iterator[ServerProcess]:
    for server in serve(env, log_dir):
        add_custom_voice(server, headers)
        yield server


def add_custom_voice(server: ServerProcess, headers: dict[str, str]) -> None:
    """A custom voice for the fuzz to speak with, and to leave alone: it lives in the data dir it fuzzes."""
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        spoken = client.post(SPEECH_PATH, json={"input": REFERENCE_TEXT, "voice": "alloy", "response_format": "wav"})
        assert spoken.status_code == 200, spoken.text
        added = client.post(
            "/v1/audio/voices", data={"name": CUSTOM_VOICE}, files={"file": ("ref.wav", spoken.content)}
        )
        assert added.status_code == 200, added.text


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"VOXSERVE_DATA_DIR": str(tmp_path_factory.mktemp("fuzz-open-data"))}
    yield from start(env, tmp_path_factory.mktemp("fuzz-open"), {})


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "VOXSERVE_DATA_DIR": str(tmp_path_factory.mktemp("fuzz-keyed-data")),
        "VOXSERVE_API_KEYS": json.dumps([FUZZ_KEY]),
    }
    yield from start(env, tmp_path_factory.mktemp("fuzz-keyed"), KEY_HEADERS)


def load_schema(server: ServerProcess, *excluded_paths: str) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=10)
    return schema.exclude(path=[*SLOW_PATHS, *excluded_paths])


def openai_error_problem(response: Response) -> str | None:
    """Why the body is not `{"error": {"message": str, "type": str, "param": str|null, "code": str|null}}`."""
    try:
        body = response.json()
    except ValueError:
        return "body is not JSON"
    if not isinstance(body, dict) or set(body) != {"error"}:
        return "body is not OpenAI's error shape"
    error = body["error"]
    if not isinstance(error, dict) or set(error) != ERROR_KEYS:
        return "body is not OpenAI's error shape"
    if not isinstance(error["message"], str) or not isinstance(error["type"], str):
        return "error message or type is not a string"
    if not all(error[key] is None or isinstance(error[key], str) for key in ("param", "code")):
        return "error param or code is neither a string nor null"
    return None


def response_problem(response: Response) -> str | None:
    if response.status_code >= 500:
        return "server error"
    if response.status_code >= 400:
        return openai_error_problem(response)
    return None


def unauthorized_problem(response: Response) -> str | None:
    """401, except for a body past the route's limit: the guard refuses that (413) before any key is read, so
    an oversized body costs the server nothing whoever sends it."""
    too_large = response.status_code == 413 and response.json().get("error", {}).get("code") == "request_too_large"
    if response.status_code != 401 and not too_large:
        return "not 401"
    return openai_error_problem(response)


@dataclass
class FuzzReport:
    """Every distinct problem (operation, status, what is wrong) with the first request that showed it."""

    headers: dict[str, str]
    log_start: int
    cases: int = 0
    problems: dict[tuple[str, int, str], str] = field(default_factory=dict)

    def record(self, case: Case, response: Response, problem: str | None) -> None:
        self.cases += 1
        key = (case.operation.label, response.status_code, problem or "")
        if problem is not None and key not in self.problems:
            body = response.content[:500].decode(errors="replace")
            self.problems[key] = f"{case.as_curl_command(self.headers)}\n    -> {response.status_code} {body}"

    def summary(self) -> str:
        return "\n".join(f"{label} -> {status}: {problem}\n    {repro}"
                         for (label, status, problem), repro in self.problems.items())  # fmt: skip


def shortened(case: Case) -> Case:
    text = case.body.get("input") if isinstance(case.body, dict) else None
    if isinstance(text, str) and SHORT_INPUT_CHARS < len(text) <= MAX_INPUT_CHARS:
        case.body["input"] = text[:SHORT_INPUT_CHARS]
    return case


def spoken_by(case: Case, speaker: tuple[str, str | dict[str, str]] | None) -> Case:
    if speaker is not None and isinstance(case.body, dict):
        case.body["model"], case.body["voice"] = speaker
    return case


def cases(operation: APIOperation, mode: GenerationMode) -> st.SearchStrategy[Case]:
    generated = operation.as_strategy(generation_mode=mode).map(shortened)
    if operation.path != SPEECH_PATH or mode is GenerationMode.NEGATIVE:
        return generated
    return st.tuples(generated, st.sampled_from(SPEAKERS)).map(lambda pair: spoken_by(*pair))


def fuzz(server: ServerProcess, schema: schemathesis.BaseSchema, headers: dict[str, str], judge: Judge) -> FuzzReport:
    """Send each operation up to `CASES_PER_OPERATION_AND_MODE` valid cases and as many invalid ones."""
    report = FuzzReport(headers, log_start=len(server.log_text()))
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ_SETTINGS
            @given(case=cases(operation, mode))
            def send(case: Case) -> None:
                response = case.call(headers=headers, timeout=REQUEST_TIMEOUT_S)
                report.record(case, response, judge(response))

            try:
                send()
            except Unsatisfiable:
                # No parameters and no body (`GET /health`): there is nothing to send wrong.
                if mode is GenerationMode.POSITIVE:
                    raise
    return report


def voice_ids(server: ServerProcess) -> set[str]:
    response = httpx.get(f"{server.url}/v1/audio/voices", headers=KEY_HEADERS, timeout=30)
    assert response.status_code == 200, response.text
    return {voice["id"] for voice in response.json()["data"]}


def server_errors(server: ServerProcess, log_start: int) -> str:
    """The log's error lines since `log_start`, and the exception each traceback ends with."""
    lines = server.log_text()[log_start:].splitlines()
    return "\n".join(line for line in lines if " ERROR " in line or EXCEPTION_LINE.match(line))


def assert_fuzzed_cleanly(server: ServerProcess, report: FuzzReport, voices_before: set[str]) -> None:
    assert report.cases > 0
    assert not report.problems, (
        f"{len(report.problems)} problems in {report.cases} cases:\n{report.summary()}\n"
        f"server errors:\n{server_errors(server, report.log_start)}"
    )
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    assert voices_before - voice_ids(server) == set()


def test_open_server_answers_every_generated_request(open_server: ServerProcess) -> None:
    # A created key would close the open server, and the rest of its fuzz would only see 401s.
    schema = load_schema(open_server).exclude(method="POST", path="/v1/keys")
    voices_before = voice_ids(open_server)
    report = fuzz(open_server, schema, {}, response_problem)
    assert_fuzzed_cleanly(open_server, report, voices_before)


def test_keyed_server_answers_every_generated_request(keyed_server: ServerProcess) -> None:
    voices_before = voice_ids(keyed_server)
    report = fuzz(keyed_server, load_schema(keyed_server), KEY_HEADERS, response_problem)
    assert_fuzzed_cleanly(keyed_server, report, voices_before)


def test_a_wrong_key_gets_a_401_in_openai_shape_everywhere(keyed_server: ServerProcess) -> None:
    voices_before = voice_ids(keyed_server)
    schema = load_schema(keyed_server, *KEYLESS_PATHS)
    report = fuzz(keyed_server, schema, {"Authorization": f"Bearer {WRONG_KEY}"}, unauthorized_problem)
    assert_fuzzed_cleanly(keyed_server, report, voices_before)
