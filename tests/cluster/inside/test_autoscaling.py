"""Autoscaling: under sustained load the model replicas grow to `cluster_max_replicas`; idle, they fall back to
`cluster_replicas`."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.cluster.inside.support import wait_for_replicas

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
TEXT = "A sustained load keeps every replica busy for a while, sentence after sentence, until the test is done."


def test_replicas_scale_up_under_load_and_back_down_when_idle(client: httpx.Client) -> None:
    wait_for_replicas(lambda states: states.get("RUNNING") == 2 and len(states) == 1, timeout_s=60)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            response = client.post("/v1/audio/speech", json={"input": TEXT, "voice": "alloy", "response_format": "wav"},
                                   headers={"Cache-Control": "no-store"})  # fmt: skip
            assert response.status_code == 200, response.text

    with ThreadPoolExecutor(6) as pool:
        clients = [pool.submit(load) for _ in range(6)]
        try:
            wait_for_replicas(lambda states: states.get("RUNNING", 0) >= 3, timeout_s=90)
        finally:
            stop.set()
        for done in clients:
            done.result()
    wait_for_replicas(lambda states: states.get("RUNNING") == 2 and len(states) == 1, timeout_s=90)
