"""The Ray Serve application built from `Settings`: `build_application(settings)` for `voxserve cluster serve`,
and `build`, the entry `serve run voxserve.cluster.app:build` and KubeRay's RayService take (`import_path`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve import Application

from voxserve.cluster.deployments import Ingress, SpeechReplica
from voxserve.settings import Settings

APP_NAME = "voxserve"
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray gives the head node this resource


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """How many model replicas, and each one's share of a node."""

    replicas: int
    max_replicas: int
    target_ongoing_requests: float
    replica_cpus: float
    replica_gpus: float
    replica_workers: int  # model calls one replica runs at once

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas > self.replicas


def cluster_options(settings: Settings) -> ClusterOptions:
    workers = settings.cluster_replica_workers or max(1, math.ceil(settings.cluster_replica_cpus))
    return ClusterOptions(
        replicas=settings.cluster_replicas,
        max_replicas=max(settings.cluster_max_replicas, settings.cluster_replicas),
        target_ongoing_requests=settings.cluster_target_ongoing_requests,
        replica_cpus=settings.cluster_replica_cpus,
        replica_gpus=settings.cluster_replica_gpus,
        replica_workers=workers,
    )


def build_application(settings: Settings) -> Application:
    """An ingress (one replica: it holds the job store, keys and custom voices) in front of the model replicas."""
    options = cluster_options(settings)
    scaling: dict[str, Any] = (
        {"autoscaling_config": {"min_replicas": options.replicas, "max_replicas": options.max_replicas,
                                "target_ongoing_requests": options.target_ongoing_requests,
                                **settings.cluster_autoscaling_config}}
        if options.autoscaling
        else {"num_replicas": options.replicas}
    )  # fmt: skip
    if settings.cluster_max_replicas_per_node:
        scaling["max_replicas_per_node"] = settings.cluster_max_replicas_per_node
    # A replica's threads come from its reservation, not from the node's cores (other replicas share them).
    threads = max(1, int(options.replica_cpus // options.replica_workers))
    replica_settings = settings.model_copy(
        update={
            "workers": options.replica_workers,
            "intra_op_threads": settings.intra_op_threads or threads,
            "solo_intra_op_threads": settings.solo_intra_op_threads or max(1, int(options.replica_cpus)),
            "express_worker": False,
            **({"device": "cuda"} if options.replica_gpus and settings.device == "auto" else {}),
        }
    )
    ingress_settings = settings.model_copy(update={"workers": options.max_replicas * options.replica_workers})
    replica = serve.deployment(SpeechReplica).options(
        name="speech",
        ray_actor_options={"num_cpus": options.replica_cpus, "num_gpus": options.replica_gpus},
        max_ongoing_requests=options.replica_workers,
        graceful_shutdown_timeout_s=settings.cluster_graceful_shutdown_s,
        **scaling,
    )
    # The ingress lives on the head node, beside the HTTP proxy and `data_dir` (jobs, keys, custom voices).
    ingress = serve.deployment(Ingress).options(
        name="ingress", num_replicas=1, max_ongoing_requests=max(settings.max_queue_size, 64),
        ray_actor_options={"num_cpus": settings.cluster_ingress_cpus, "resources": {HEAD_NODE_RESOURCE: 0.001}},
    )  # fmt: skip
    return ingress.bind(replica.bind(replica_settings.model_dump()), ingress_settings.model_dump())


def build(args: dict[str, str]) -> Application:
    """For `serve run voxserve.cluster.app:build key=value ...` and a RayService's `import_path`: settings from
    the environment (`VOXSERVE_*`), overridden by `args`."""
    return build_application(Settings(**args))
