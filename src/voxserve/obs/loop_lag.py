"""`EventLoopLag`: how late the event loop wakes for a timer. Lag means something blocks the loop (CPU work
on it, or a starved process), and every streamed response stalls with it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np


class EventLoopLag:
    """Run `watch()` as a task on the loop to measure; read `p95_s`/`max_s` from any thread."""

    def __init__(
        self, interval_s: float = 0.1, max_age_s: float = 300.0, on_lag: Callable[[float], None] | None = None
    ) -> None:
        self.interval_s = interval_s
        self._lags: deque[tuple[float, float]] = deque(maxlen=max(2, int(max_age_s / interval_s)))
        self._on_lag = on_lag
        self._lock = threading.Lock()

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval_s)
            self.record(max(loop.time() - started - self.interval_s, 0.0))

    def record(self, lag_s: float) -> None:
        with self._lock:
            self._lags.append((time.monotonic(), lag_s))
        if self._on_lag is not None:
            self._on_lag(lag_s)

    def lags(self, since: float = 0.0) -> list[float]:
        with self._lock:
            return [lag for at, lag in self._lags if at >= since]

    def summary(self, since: float = 0.0) -> dict[str, float | None]:
        lags = np.array(self.lags(since))
        if not len(lags):
            return {"p95_s": None, "max_s": None, "samples": 0}
        return {"p95_s": round(float(np.percentile(lags, 95)), 6), "max_s": round(float(lags.max()), 6),
                "samples": len(lags)}  # fmt: skip
