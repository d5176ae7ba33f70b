"""A node lost while it runs model calls: the calls run again on a replica that is alive, every request in
flight completes, Serve replaces the lost replicas once a node has room, and later requests use them. Runs
last (it changes the cluster)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.cluster.inside.support import NODE_CPUS, RayCluster, per_replica, wait_for_replicas
from tests.conftest import decode

pytestmark = pytest.mark.ray
TEXT = " ".join(f"Sentence {index} of a reply that outlives the node it started on." for index in range(8))


def replica_segments(client: httpx.Client) -> dict[str, float]:
    return per_replica(client, "voxserve_replica_segments_total")


def test_requests_survive_a_lost_node_and_the_replicas_come_back(client: httpx.Client, ray_cluster: RayCluster) -> None:
    wait_for_replicas(lambda states: states.get("RUNNING") == 2 and len(states) == 1, timeout_s=60)
    before = sum(replica_segments(client).values())

    def speak() -> httpx.Response:
        body = {"input": TEXT, "voice": "alloy", "response_format": "wav"}
        return client.post("/v1/audio/speech", json=body, headers={"Cache-Control": "no-store"})

    with ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(speak) for _ in range(4)]
        deadline = time.monotonic() + 60
        while sum(replica_segments(client).values()) < before + 2:  # model calls are running on the replicas
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ray_cluster.cluster.remove_node(ray_cluster.worker, allow_graceful=False)
        responses = [request.result() for request in in_flight]
    for response in responses:
        assert response.status_code == 200, response.text
        samples, rate = decode(response.content)
        assert len(samples) / rate > 20.0

    survivors = set(replica_segments(client))
    ray_cluster.cluster.add_node(num_cpus=NODE_CPUS)
    wait_for_replicas(lambda states: states.get("RUNNING") == 2 and len(states) == 1, timeout_s=120)
    with ThreadPoolExecutor(4) as pool:
        later = list(pool.map(lambda _: speak(), range(6)))
    assert [response.status_code for response in later] == [200] * 6
    assert set(replica_segments(client)) - survivors, "no replacement replica took any work"
