"""WORLD vocoder analysis and synthesis (pyworld): F0 by dio + stonemask, spectral envelope by CheapTrick,
aperiodicity by D4C. `harvest` would be a better F0 tracker but is ~25x slower than dio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyworld
import soxr

FRAME_PERIOD_MS = 5.0
# Analysis cost grows with the rate; speech needs nothing above 12 kHz, and below 16 kHz F0 tracking degrades.
MIN_RATE_HZ = 16_000
MAX_RATE_HZ = 24_000
F0_FLOOR_HZ = 60.0
F0_CEIL_HZ = 600.0
ENVELOPE_DIMS = 40


@dataclass(frozen=True, slots=True)
class WorldFrames:
    """One recording in WORLD's terms: per 5 ms frame, F0 (0 = unvoiced), envelope and aperiodicity."""

    f0: np.ndarray
    envelope: np.ndarray
    aperiodicity: np.ndarray
    sample_rate: int

    @property
    def voiced(self) -> np.ndarray:
        return self.f0 > 0

    def coded_envelope(self) -> np.ndarray:
        """The envelope as `ENVELOPE_DIMS` mel-cepstral coefficients per frame (c0 carries the frame's level)."""
        return pyworld.code_spectral_envelope(self.envelope, self.sample_rate, ENVELOPE_DIMS)


def analysis_rate(sample_rate: int) -> int:
    return min(max(sample_rate, MIN_RATE_HZ), MAX_RATE_HZ)


def analyze(samples: np.ndarray, sample_rate: int, *, aperiodicity: bool = True) -> WorldFrames:
    """WORLD frames of mono float audio, analysed at `analysis_rate(sample_rate)`. Without `aperiodicity`
    (a third of the cost; features do not need it) that array is empty."""
    rate = analysis_rate(sample_rate)
    signal = np.ascontiguousarray(soxr.resample(samples, sample_rate, rate) if rate != sample_rate else samples)
    signal = signal.astype(np.float64)
    coarse_f0, times = pyworld.dio(signal, rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(signal, coarse_f0, times, rate)
    fft_size = pyworld.get_cheaptrick_fft_size(rate, F0_FLOOR_HZ)
    envelope = pyworld.cheaptrick(signal, f0, times, rate, f0_floor=F0_FLOOR_HZ, fft_size=fft_size)
    if not aperiodicity:
        return WorldFrames(f0, envelope, np.zeros((0, envelope.shape[1])), rate)
    return WorldFrames(f0, envelope, pyworld.d4c(signal, f0, times, rate, fft_size=fft_size), rate)


def synthesize(frames: WorldFrames, sample_rate: int, length: int) -> np.ndarray:
    """Float32 audio at `sample_rate`, exactly `length` samples long (WORLD pads to whole frames)."""
    signal = pyworld.synthesize(
        np.ascontiguousarray(frames.f0),
        np.ascontiguousarray(frames.envelope),
        np.ascontiguousarray(frames.aperiodicity),
        frames.sample_rate,
        FRAME_PERIOD_MS,
    )
    if frames.sample_rate != sample_rate:
        signal = soxr.resample(signal, frames.sample_rate, sample_rate)
    out = np.zeros(length, dtype=np.float32)
    out[: min(length, len(signal))] = signal[:length]
    return out
