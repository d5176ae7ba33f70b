"""Process-wide tuning applied once, before the server starts its threads."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum

logger = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(arenas: int) -> None:
    """Cap glibc's per-thread malloc arenas. Every worker, encoder and event-loop thread otherwise gets its own
    arena, and audio buffers of many sizes fragment them: at concurrency 8 this cut peak RSS from 0.92 to
    0.76 GB at the same throughput (measured with `voxserve bench`). 0 leaves glibc's default."""
    if arenas <= 0:
        return
    library = ctypes.util.find_library("c")
    if library is None:
        logger.info("no C library found; malloc arenas left as they are")
        return
    if not ctypes.CDLL(library).mallopt(_M_ARENA_MAX, arenas):
        logger.warning("mallopt(M_ARENA_MAX, %d) was refused", arenas)


def release_free_heap() -> None:
    """Hand the free memory glibc's malloc arenas hold back to the system (`malloc_trim`); elsewhere nothing.
    After a burst of large audio buffers, free chunks otherwise stay in the process for good."""
    library = ctypes.util.find_library("c") if sys.platform == "linux" else None
    trim = getattr(ctypes.CDLL(library), "malloc_trim", None) if library is not None else None  # glibc only
    if trim is not None:
        trim(0)


def lower_thread_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority by `niceness` (Linux, where each thread has its own nice value).
    Background work (conversions) then takes only the CPU that interactive speech leaves idle, and all of it when
    speech is idle. Raising niceness needs no privilege; elsewhere, or at 0, nothing changes."""
    if niceness <= 0 or sys.platform != "linux":
        return  # on other systems PRIO_PROCESS with a thread id would name some other process
    thread = threading.get_native_id()
    try:
        # Relative to where the thread is: a server started under `nice` keeps its workers below itself.
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + niceness, 19))
    except OSError as exc:
        logger.warning("could not lower the priority of thread %s: %s", threading.current_thread().name, exc)


class BackgroundPriority(StrEnum):
    """Where background threads (long-form jobs) run on the CPU, below the rest of the server."""

    IDLE = "idle"  # Linux's SCHED_IDLE class
    LOW = "low"  # nice 19


def lower_to_background(priority: BackgroundPriority) -> None:
    """Put the calling thread below the rest of the server for good (an unprivileged thread cannot come back).
    `IDLE` is Linux's SCHED_IDLE: the thread runs only on CPU time no other thread wants, and a waking thread of
    normal priority takes its core at once; a nice value, even 19, still gets a share of a busy core and fills the
    gaps between a live call's steps. Where SCHED_IDLE is missing, and for `LOW`, nice 19."""
    idle_policy = getattr(os, "SCHED_IDLE", None)
    if priority is BackgroundPriority.IDLE and idle_policy is not None and sys.platform == "linux":
        try:
            os.sched_setscheduler(threading.get_native_id(), idle_policy, os.sched_param(0))
            return
        except OSError as exc:
            logger.warning("could not put thread %s in SCHED_IDLE: %s", threading.current_thread().name, exc)
    lower_thread_priority(19)


def prestarted_pool(
    workers: int, prefix: str, initializer: Callable[..., object] | None = None, initargs: tuple[object, ...] = ()
) -> ThreadPoolExecutor:
    """A thread pool with all `workers` threads running now, rather than started one by one as load first needs
    them: the server's thread count is then flat from its first request on, so a thread that appears later is a
    leak, not a pool growing."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix=prefix, initializer=initializer, initargs=initargs)
    started = threading.Barrier(workers)
    # Each task holds its thread until all have one, so the pool must start a thread per task.
    for future in [pool.submit(started.wait) for _ in range(workers)]:
        future.result()
    return pool
