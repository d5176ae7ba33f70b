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
    """Keeps every sample within `ceiling` (linear), chunk by chunk, with the same output however the stream is
    cut. The gain each sample needs is looked ahead `lookahead` samples, so the gain falls smoothly over that time
    before a peak (no click), and it recovers linearly over `_RELEASE_S`; a final clamp holds the ceiling exactly.
    Output lags input by `lookahead - 1` samples (2 ms), returned by `flush`. Audio under the ceiling passes
    unchanged."""

    def __init__(self, sample_rate: int, ceiling: float) -> None:
        self._ceiling = ceiling
        self._window = max(2, round(_LOOKAHEAD_S * sample_rate))
        self._release = 1.0 / max(1.0, _RELEASE_S * sample_rate)  # gain recovered per sample
        self._start()

    def _start(self) -> None:
        self._held = np.zeros(0, np.float32)  # input awaiting its lookahead
        self._gains = np.ones(self._window - 1)  # the last smoothed-gain inputs, for the moving average
        self._floor = np.inf  # min over samples so far of (needed gain - release * index)
        self._count = 0  # samples whose gain is decided

    def push(self, samples: np.ndarray) -> np.ndarray:
        held = np.concatenate([self._held, np.asarray(samples, np.float32)])
        ready = len(held) - (self._window - 1)
        if ready <= 0:
            self._held = held
            return np.zeros(0, np.float32)
        needed = np.minimum(1.0, self._ceiling / np.maximum(np.abs(held.astype(np.float64)), 1e-12))
        # Each sample's gain is the least any sample within its lookahead needs, released linearly after.
        ahead = sliding_window_view(needed, self._window).min(axis=1)
        index = self._count + np.arange(ready)
        floors = np.minimum.accumulate(np.concatenate([[self._floor], ahead - self._release * index]))[1:]
        self._floor = float(floors[-1])
        gain = np.minimum(1.0, floors + self._release * index)
        # Averaged over the lookahead: every gain averaged into a sample's is at most what that sample needs.
        history = np.concatenate([self._gains, gain])
        smooth = sliding_window_view(history, self._window).mean(axis=1)
        self._gains = history[-(self._window - 1) :]
        self._count += ready
        self._held = held[ready:]
        out = (held[:ready] * smooth).astype(np.float32)
        return np.clip(out, -self._ceiling, self._ceiling)

    def flush(self) -> np.ndarray:
        """The held samples (the stream's last `lookahead - 1`); the limiter then starts a new stream."""
        out = self.push(np.zeros(self._window - 1, np.float32))
        self._start()
        return out
