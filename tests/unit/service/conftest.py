"""Fixtures the service tests share: metrics, and a one-worker scheduler recording into them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voxserve.obs.metrics import Metrics
from voxserve.scheduler.pool import Scheduler, SchedulerOptions


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def scheduler(metrics: Metrics) -> Iterator[Scheduler]:
    scheduler = Scheduler(SchedulerOptions(workers=1), metrics)
    yield scheduler
    scheduler.close()
