"""What the inner suite shares: the cluster it runs on, and the speech deployment's replicas as Serve's controller
reports them (the test process is Ray's driver)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

NODE_CPUS = 1


@dataclass
class RayCluster:
    url: str
    cluster: Any  # ray.cluster_utils.Cluster
    worker: Any  # the worker node


def running_replicas() -> dict[str, int]:
    """The speech deployment's replicas by state, as Serve's controller reports them."""
    from ray import serve

    from voxserve.cluster.app import APP_NAME

    deployment = serve.status().applications[APP_NAME].deployments["speech"]
    return dict(deployment.replica_states)


def wait_for_replicas(predicate: Callable[[dict[str, int]], bool], timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    states = running_replicas()
    while not predicate(states):
        assert time.monotonic() < deadline, f"replicas stayed {states}"
        time.sleep(0.5)
        states = running_replicas()
    return states


def per_replica(client: httpx.Client, name: str) -> dict[str, float]:
    """One of the ingress's `voxserve_replica_*` counters, summed per replica."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                found[sample.labels["replica"]] = found.get(sample.labels["replica"], 0) + sample.value
    return found
