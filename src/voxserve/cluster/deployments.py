"""The two deployments: `SpeechReplica` (engines, warmed, running model calls in as many threads as its CPUs)
and `Ingress` (the whole HTTP API: the same FastAPI app, routes, keys and errors as `voxserve serve`, with
`RemoteEngine`s in place of local ones)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp

from voxserve.api.app import create_app
from voxserve.cluster.remote import RemoteEngine, ReplicaCollector, ReplicaResult, ReplicaStats
from voxserve.engines.base import PreparedSegment
from voxserve.errors import VoxError
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.service.bootstrap import Engines, build_engines, build_services
from voxserve.settings import Settings

logger = logging.getLogger(__name__)
REPLICA_ATTEMPTS = 3


class SpeechReplica:
    """One replica: every engine `voxserve serve` would load, warmed before Ray routes to it. `run` takes at most
    `settings.workers` model calls at once (what `max_ongoing_requests` tells Ray's router too)."""

    def __init__(self, values: dict[str, Any]) -> None:
        settings = Settings(**values)
        engines = build_engines(settings, EspeakPhonemizer())
        self._engines = {engine.name: engine for engine in engines.engines}
        for engine in engines.engines:
            engine.warmup()
        self._slots = asyncio.Semaphore(settings.workers)
        context = serve.get_replica_context()
        self._replica = context.replica_tag
        self._node = _node_id()

    async def run(self, engine: str, batch: list[PreparedSegment], solo: bool) -> ReplicaResult:
        async with self._slots:
            started = time.perf_counter()
            try:
                audio = await asyncio.to_thread(self._engines[engine].run, batch, solo=solo)
            except VoxError as error:
                return ReplicaResult(self._replica, self._node, [], time.perf_counter() - started, error)
            return ReplicaResult(self._replica, self._node, audio, time.perf_counter() - started)


@serve.ingress()
class Ingress:
    """The HTTP API. Its scheduler has a worker for every model call the replicas can run at once (at their
    largest count), each waiting on a replica while the replica works."""

    def __init__(self, replica: DeploymentHandle, values: dict[str, Any]) -> None:
        self._settings = Settings(**values)
        timeout_s = self._settings.request_timeout_s
        stats = ReplicaStats()

        def call(engine: str, batch: list[PreparedSegment], solo: bool) -> ReplicaResult:
            # A replica that died (its node lost) sent nothing of this call: another replica runs it again.
            for attempt in range(2, REPLICA_ATTEMPTS + 1):
                try:
                    return replica.run.remote(engine, batch, solo).result(timeout_s=timeout_s)
                except RayActorError:
                    logger.warning("a model replica died during a call; running it again (attempt %d)", attempt)
            return replica.run.remote(engine, batch, solo).result(timeout_s=timeout_s)

        local = build_engines(self._settings, EspeakPhonemizer())
        engines = Engines([RemoteEngine(engine, call, stats) for engine in local.engines], on_gpu=False)
        self._services = build_services(self._settings, engines)
        self._services.telemetry.metrics.registry.register(ReplicaCollector(stats))

    def __serve_build_asgi_app__(self) -> ASGIApp:
        return create_app(self._settings, self._services)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:12]
