"""One Ray cluster and one voxserve application for the whole inner suite: a head node (the ingress and a model
replica) and a worker node (model replicas), simulated on this machine with `ray.cluster_utils.Cluster`, on this
namespace's loopback. Replicas autoscale between 2 and 3, quickly, so the suite can watch them move."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.cluster.inside.support import NODE_CPUS, RayCluster
from tests.conftest import free_port
from voxserve.settings import Settings

READY_TIMEOUT_S = 240
# Replicas report their load every second (Ray's default is 10 s), so scaling decisions come within seconds.
FAST_METRICS = {
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
}


def pytest_configure(config: pytest.Config) -> None:
    """Warnings are errors in this project, but Ray's own deprecation notices are Ray's to fix."""
    for category in ("DeprecationWarning", "FutureWarning", "UserWarning", "ResourceWarning"):
        config.addinivalue_line("filterwarnings", f"ignore::{category}:ray")


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    os.environ.update(FAST_METRICS)
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from voxserve.cluster.app import APP_NAME, build_application

    port = free_port()
    settings = Settings(
        port=port, data_dir=tmp_path_factory.mktemp("cluster-data"), noise_scale=0.0, noise_w=0.0,
        audio_cache_bytes=0, cluster_replicas=2, cluster_max_replicas=3, cluster_target_ongoing_requests=1,
        cluster_replica_cpus=0.5, cluster_ingress_cpus=0.5, cluster_max_replicas_per_node=2,
        cluster_autoscaling_config={"upscale_delay_s": 1, "downscale_delay_s": 3, "look_back_period_s": 2},
        cluster_graceful_shutdown_s=2,
    )  # fmt: skip
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": NODE_CPUS, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=NODE_CPUS)
    ray.init(address=cluster.address, log_to_driver=False)
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_application(settings), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url)
    yield RayCluster(url, cluster, worker)
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the cluster was not ready in {READY_TIMEOUT_S} s")


@pytest.fixture
def client(ray_cluster: RayCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ray_cluster.url, timeout=120) as http:
        yield http


@pytest.fixture
def openai_client(ray_cluster: RayCluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{ray_cluster.url}/v1", api_key="unused", max_retries=0)
