"""Deadlines and disconnects against a real server on the real model, with one worker and a small queue: the
end-to-end counterparts of the exact in-process tests (tests/unit/api/test_admission.py, which also covers 429)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess, metric_value

# About 85 segments: 10 to 15 s of work on one worker, well past the four-second deadline, and far more than the
# six-segment queue.
LONG_TEXT = " ".join(f"This is sentence number {n} of a long reading." for n in range(85))
SHORT = {"input": "Short and sweet.", "voice": "alloy", "response_format": "wav"}


@pytest.fixture
def client(constrained_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=constrained_server.url, timeout=60) as client:
        yield client
        wait_until_idle(client)


def wait_until_idle(client: httpx.Client, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (
            metric_value(client, "voxserve_queue_depth_segments") == 0
            and client.post("/v1/audio/speech", json=SHORT).status_code == 200
        ):
            return
        time.sleep(0.2)
    raise AssertionError("server did not drain its queue")


def wait_for(predicate, timeout_s: float = 15) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_deadline_gives_504_and_drops_the_queued_work(client: httpx.Client) -> None:
    timed_out_before = metric_value(client, "voxserve_requests_timed_out_total")
    items_before = metric_value(client, "voxserve_engine_items_total", {"engine": "piper"}, absent=0.0)
    response = client.post("/v1/audio/speech", json={**SHORT, "input": LONG_TEXT, "stream": False})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert metric_value(client, "voxserve_requests_timed_out_total") == timed_out_before + 1
    wait_until_idle(client)
    synthesized = metric_value(client, "voxserve_engine_items_total", {"engine": "piper"}) - items_before
    assert synthesized < 60  # of 85 segments: the rest were dropped, not synthesized


def test_disconnect_cancels_queued_segments(client: httpx.Client) -> None:
    dropped_before = metric_value(client, "voxserve_segments_cancelled_total")
    items_before = metric_value(client, "voxserve_engine_items_total", {"engine": "piper"}, absent=0.0)
    body = {**SHORT, "input": LONG_TEXT, "response_format": "pcm"}
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        assert response.status_code == 200
        next(response.iter_bytes())
    assert wait_for(lambda: metric_value(client, "voxserve_segments_cancelled_total") - dropped_before >= 65)
    synthesized = metric_value(client, "voxserve_engine_items_total", {"engine": "piper"}) - items_before
    assert synthesized <= 15


def test_disconnect_while_buffering_cancels_too(client: httpx.Client, constrained_server: ServerProcess) -> None:
    dropped_before = metric_value(client, "voxserve_segments_cancelled_total")
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=constrained_server.url, timeout=0.5) as impatient:
        impatient.post("/v1/audio/speech", json={**SHORT, "input": LONG_TEXT, "stream": False})
    assert wait_for(lambda: metric_value(client, "voxserve_segments_cancelled_total") - dropped_before >= 65)
