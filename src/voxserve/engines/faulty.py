"""`FaultyEngine`: a real engine with faults injected into a fraction of its calls, for soak and fault tests.

Selected by the `fault_injection` setting (never on by default). Each call draws once from a seeded generator:
it raises, hangs past any deadline, returns garbage (the wrong number of outputs, or non-finite samples), or runs
normally. What the server must do with each is the contract under test: fail that request cleanly and go on."""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxserve.engines.base import Engine, EngineProfile, PreparedSegment, SegmentAudio
from voxserve.errors import ConfigError
from voxserve.types import SynthesisParams, VoiceInfo

_SPEC = re.compile(r"(raise|hang|garbage)=(0(\.\d+)?|1(\.0+)?)")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Shares of calls that raise, hang (for `hang_s`) or return garbage; the rest run normally."""

    raise_rate: float = 0.0
    hang_rate: float = 0.0
    garbage_rate: float = 0.0
    hang_s: float = 30.0
    seed: int = 0

    @classmethod
    def parse(cls, spec: str, *, hang_s: float = 30.0, seed: int = 0) -> FaultPlan:
        """`raise=0.05,hang=0.01,garbage=0.02` (any subset)."""
        rates: dict[str, float] = {}
        for part in filter(None, (piece.strip() for piece in spec.split(","))):
            match = _SPEC.fullmatch(part)
            if match is None:
                raise ConfigError(f"fault_injection: {part!r} is not raise|hang|garbage=RATE (0-1)")
            rates[match.group(1)] = float(match.group(2))
        if sum(rates.values()) > 1:
            raise ConfigError("fault_injection: the rates add up to more than 1")
        return cls(rates.get("raise", 0.0), rates.get("hang", 0.0), rates.get("garbage", 0.0), hang_s, seed)


class FaultyEngine:
    """Wraps `inner`; everything but `run` (and warm-up, which stays clean so the server can start) passes through."""

    def __init__(self, inner: Engine, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.name = inner.name
        self.supports_batching = inner.supports_batching
        self.supports_windows = inner.supports_windows
        self.supports_instructions = inner.supports_instructions
        self.supports_timestamps = inner.supports_timestamps
        self.injected: dict[str, int] = {"raise": 0, "hang": 0, "garbage": 0}
        self._random = random.Random(plan.seed)
        self._lock = threading.Lock()
        self._released = threading.Event()

    def voices(self) -> Sequence[VoiceInfo]:
        return self.inner.voices()

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        return self.inner.prepare(params)

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        fault = self._draw()
        if fault == "raise":
            raise RuntimeError("injected fault: the engine raised")
        if fault == "hang":
            self._released.wait(self.plan.hang_s)
        outputs = self.inner.run(batch, solo=solo, windowed=windowed)
        if fault == "garbage":
            return outputs[:-1] if len(outputs) > 1 else [SegmentAudio(np.full(16, np.nan, dtype=np.float32))] * 2
        return outputs

    def warmup(self) -> None:
        self.inner.warmup()

    def runtime_info(self) -> dict[str, object]:
        return {**self.inner.runtime_info(), "fault_injection": dict(self.injected)}

    def start_profiling(self, directory: Path) -> None:
        self.inner.start_profiling(directory)

    def stop_profiling(self) -> list[EngineProfile]:
        return self.inner.stop_profiling()

    def release_memory(self) -> None:
        self.inner.release_memory()

    def release_hangs(self) -> None:
        """End every hanging call now (shutting down)."""
        self._released.set()

    def _draw(self) -> str | None:
        plan = self.plan
        with self._lock:
            roll = self._random.random()
        for fault, rate in (("raise", plan.raise_rate), ("hang", plan.hang_rate), ("garbage", plan.garbage_rate)):
            if roll < rate:
                with self._lock:
                    self.injected[fault] += 1
                return fault
            roll -= rate
        return None
