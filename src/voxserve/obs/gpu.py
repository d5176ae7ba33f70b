"""NVIDIA GPU state through NVML (nvidia-ml-py). Without a GPU, a driver or the library, the probe reports no
GPUs and why, and never raises."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pynvml

T = TypeVar("T")

# Clock-event reasons that mean the GPU runs slower than it could (idle and application settings do not).
_SLOWDOWNS = {
    "sw_power_cap": pynvml.nvmlClocksEventReasonSwPowerCap,
    "hw_slowdown": pynvml.nvmlClocksEventReasonHwSlowdown,
    "sw_thermal": pynvml.nvmlClocksEventReasonSwThermalSlowdown,
    "hw_thermal": pynvml.nvmlClocksEventReasonHwThermalSlowdown,
    "hw_power_brake": pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
    "sync_boost": pynvml.nvmlClocksEventReasonSyncBoost,
}
_MHZ = 1_000_000


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    """One GPU at one moment; a field NVML could not read is `None`."""

    index: int
    name: str
    utilization: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    sm_clock_hz: float | None
    memory_clock_hz: float | None
    throttle_reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {field: getattr(self, field) for field in self.__slots__}


class GpuProbe:
    """Reads every visible NVIDIA GPU. `reason` says why there are none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: list[object] = []
        self.reason = ""
        try:
            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
        except pynvml.NVMLError as exc:
            self.reason = f"no NVIDIA GPU: {exc}"
            self.driver = ""
        if not self._handles and not self.reason:
            self.reason = "no NVIDIA GPU: NVML sees none"

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def read(self) -> list[GpuSnapshot]:
        with self._lock:
            return [self._read_one(index, handle) for index, handle in enumerate(self._handles)]

    def _read_one(self, index: int, handle: object) -> GpuSnapshot:
        utilization = _try(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
        memory = _try(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
        reasons = _try(lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)) or 0
        sm_clock = _try(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
        memory_clock = _try(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM))
        return GpuSnapshot(
            index=index,
            name=_text(_try(lambda: pynvml.nvmlDeviceGetName(handle)) or "unknown"),
            utilization=utilization,
            memory_used_bytes=None if memory is None else int(memory.used),
            memory_total_bytes=None if memory is None else int(memory.total),
            temperature_c=_try(lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
            sm_clock_hz=None if sm_clock is None else sm_clock * _MHZ,
            memory_clock_hz=None if memory_clock is None else memory_clock * _MHZ,
            throttle_reasons=tuple(name for name, bit in _SLOWDOWNS.items() if reasons & bit),
        )

    def close(self) -> None:
        if self._handles:
            self._handles = []
            _try(pynvml.nvmlShutdown)


def _try(read: Callable[[], T]) -> T | None:
    """One NVML reading, or `None` where this GPU or driver does not support it."""
    try:
        return read()
    except pynvml.NVMLError:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
