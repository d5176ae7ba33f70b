"""One Ray instance and one voxserve application for the whole inner suite (Ray starts in about 15 s): two model
replicas of half a CPU each and the ingress, on this namespace's loopback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import free_port
from voxserve.settings import Settings

READY_TIMEOUT_S = 240


def pytest_configure(config: pytest.Config) -> None:
    """Warnings are errors in this project, but Ray's own deprecation notices are Ray's to fix."""
    for category in ("DeprecationWarning", "FutureWarning", "UserWarning", "ResourceWarning"):
        config.addinivalue_line("filterwarnings", f"ignore::{category}:ray")


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import ray
    from ray import serve

    from voxserve.cluster.app import APP_NAME, build_application

    port = free_port()
    settings = Settings(
        port=port, data_dir=tmp_path_factory.mktemp("cluster-data"), noise_scale=0.0, noise_w=0.0,
        cluster_replicas=2, cluster_replica_cpus=0.5, cluster_ingress_cpus=0.5, audio_cache_bytes=0,
    )  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_application(settings), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url)
    yield url
    serve.shutdown()
    ray.shutdown()


def _wait_ready(url: str) -> None:
    import time

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
def client(cluster_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster_url, timeout=60) as http:
        yield http


@pytest.fixture
def openai_client(cluster_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster_url}/v1", api_key="unused", max_retries=0)
