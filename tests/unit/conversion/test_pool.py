"""The conversion pool's threads run below speech's CPU priority, so a busy machine serves speech first."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest

from voxserve.conversion.cancellation import Cancellation
from voxserve.conversion.pool import ConversionPool, ConversionPoolOptions

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")


def own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def niceness_in(pool: ConversionPool) -> int:
    try:
        return asyncio.run(pool.run(Cancellation(time.perf_counter() + 60), own_niceness))
    finally:
        pool.close()


def test_conversion_threads_run_at_lower_priority_than_the_rest_of_the_server() -> None:
    caller = own_niceness()
    assert niceness_in(ConversionPool(ConversionPoolOptions(niceness=10))) == min(caller + 10, 19)
    assert own_niceness() == caller  # only the pool's threads were lowered


def test_niceness_zero_leaves_the_priority_as_it_is() -> None:
    assert niceness_in(ConversionPool(ConversionPoolOptions(niceness=0))) == own_niceness()


def test_niceness_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="niceness"):
        ConversionPoolOptions(niceness=20)
