"""Loudness (ITU-R BS.1770 through `pyloudnorm`), true peak, and the peak limiter every output passes through."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import soxr
from numpy.lib.stride_tricks import sliding_window_view

SILENT_LUFS = -70.0  # BS.1770's absolute gate: below it a signal has no integrated loudness
_TRUE_PEAK_OVERSAMPLING = 4
_LOOKAHEAD_S = 0.002
_RELEASE_S = 0.05
_INTERPOLATION_TAPS = 6  # samples each side of a gap between two samples that its interpolation reads


def integrated_lufs(samples: np.ndarray, sample_rate: int) -> float:
    """Gated integrated loudness in LUFS; `SILENT_LUFS` for audio too short (under one 400 ms block) or silent."""
    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) < round(0.4 * sample_rate):
        return SILENT_LUFS
    loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(samples)
    return max(float(loudness), SILENT_LUFS) if np.isfinite(loudness) else SILENT_LUFS


def true_peak_db(samples: np.ndarray, sample_rate: int) -> float:
    """The peak between samples too (4x oversampled, as BS.1770 measures true peak), in dB of full scale."""
    if len(samples) == 0:
        return -np.inf
    upsampled = soxr.resample(np.asarray(samples, np.float32), sample_rate, sample_rate * _TRUE_PEAK_OVERSAMPLING)
    peak = float(np.max(np.abs(upsampled), initial=float(np.max(np.abs(samples)))))
    return 20 * np.log10(peak) if peak > 0 else -np.inf


def db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


class PeakLimiter:
    """Keeps the signal within `ceiling` (linear), its peaks between samples too, chunk by chunk, with the same
    output however the stream is cut. Each sample's peak is the larger of the sample and the signal on either
    side of it (band-limited interpolation at quarter-sample steps, as BS.1770 measures true peak); the gain each
    sample needs is looked ahead over 2 ms, so the gain falls smoothly before a peak (no click), and it recovers
    linearly over `_RELEASE_S`. A final clamp holds sample values under the ceiling exactly. Output lags input by
    a few milliseconds, returned by `flush`; audio whose peaks are under the ceiling passes unchanged."""

    def __init__(self, sample_rate: int, ceiling: float) -> None:
        self._ceiling = ceiling
        self._window = max(2, round(_LOOKAHEAD_S * sample_rate))
        self._release = 1.0 / max(1.0, _RELEASE_S * sample_rate)  # gain recovered per sample
        self._delay = self._window - 1 + _INTERPOLATION_TAPS  # input held back for the lookahead
        self._start()

    def _start(self) -> None:
        self._history = np.zeros(_INTERPOLATION_TAPS, np.float32)  # the input before `_held`, for interpolation
        self._held = np.zeros(0, np.float32)  # input awaiting its lookahead
        self._gains: np.ndarray | None = None  # the last smoothed-gain inputs, for the moving average
        self._floor = np.inf  # min over samples so far of (needed gain - release * index)
        self._count = 0  # samples whose gain is decided

    def push(self, samples: np.ndarray) -> np.ndarray:
        held = np.concatenate([self._held, np.asarray(samples, np.float32)])
        ready = len(held) - self._delay
        if ready <= 0:
            self._held = held
            return np.zeros(0, np.float32)
        signal = np.concatenate([self._history, held]).astype(np.float64)
        # between[i]: the largest interpolated value between held[i - 1] and held[i].
        between = np.max([np.abs(np.correlate(signal, kernel, "valid")) for kernel in _KERNELS], axis=0)
        peaks = np.maximum(
            np.abs(signal[_INTERPOLATION_TAPS:-_INTERPOLATION_TAPS]), np.maximum(between[:-1], between[1:])
        )
        needed = np.minimum(1.0, self._ceiling / np.maximum(peaks, 1e-12))
        # Each sample's gain is the least any sample within its lookahead needs, released linearly after.
        ahead = sliding_window_view(needed, self._window).min(axis=1)
        index = self._count + np.arange(ready)
        floors = np.minimum.accumulate(np.concatenate([[self._floor], ahead - self._release * index]))[1:]
        self._floor = float(floors[-1])
        gain = np.minimum(1.0, floors + self._release * index)
        # Averaged over the lookahead: every gain averaged into a sample's is at most what that sample needs.
        # A stream's first samples average in its first gain, which no sample within the first lookahead exceeds.
        before = np.full(self._window - 1, gain[0]) if self._gains is None else self._gains
        history = np.concatenate([before, gain])
        smooth = sliding_window_view(history, self._window).mean(axis=1)
        self._gains = history[-(self._window - 1) :]
        self._count += ready
        self._history = signal[ready : ready + _INTERPOLATION_TAPS].astype(np.float32)
        self._held = held[ready:]
        out = (held[:ready] * smooth).astype(np.float32)
        return np.clip(out, -self._ceiling, self._ceiling)

    def flush(self) -> np.ndarray:
        """The held samples (the stream's last few milliseconds); the limiter then starts a new stream."""
        out = self.push(np.zeros(self._delay, np.float32))
        self._start()
        return out


def _interpolation_kernels() -> list[np.ndarray]:
    """Hann-windowed sinc kernels that give the signal a quarter, a half and three quarters of the way from one
    sample to the next, from `_INTERPOLATION_TAPS` samples on each side."""
    offsets = np.arange(-_INTERPOLATION_TAPS + 1, _INTERPOLATION_TAPS + 1)
    kernels = []
    for phase in (0.25, 0.5, 0.75):
        position = offsets - phase
        kernel = np.sinc(position) * 0.5 * (1 + np.cos(np.pi * position / _INTERPOLATION_TAPS))
        kernels.append(kernel / kernel.sum())
    return kernels


_KERNELS = _interpolation_kernels()
