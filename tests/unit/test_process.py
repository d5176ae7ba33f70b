"""Process tuning: pools that start at their full size, threads at a lower CPU priority."""

from __future__ import annotations

import threading

from voxserve.process import prestarted_pool


def test_a_prestarted_pool_runs_every_thread_before_its_first_task() -> None:
    before = {thread.name for thread in threading.enumerate()}
    pool = prestarted_pool(4, "prestart-test")
    try:
        started = {thread.name for thread in threading.enumerate()} - before
        assert len(started) == 4
        assert all(name.startswith("prestart-test") for name in started)
        # Under load it stays at that size: no thread is added.
        list(pool.map(lambda _: threading.current_thread().name, range(50)))
        assert {thread.name for thread in threading.enumerate()} - before == started
    finally:
        pool.shutdown()
