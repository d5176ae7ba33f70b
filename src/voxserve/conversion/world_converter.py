"""`WorldConverter`: re-synthesize speech with WORLD after mapping its pitch, envelope and level to a target.

- Pitch: log-F0 is standardised around the source's median and re-scaled around the target's, spreads matched.
- Vocal tract: each frame's envelope is warped along the frequency axis by the factor that best aligns the
  two voices' mean log envelopes (times `formant_shift`).
- Timbre: mel-cepstral coefficients 1..N are moved toward the target's per-coefficient mean and spread by
  `envelope_strength` (c0, the frame's level, stays the source's, so prosody is kept). When either recording is
  narrowband (a phone line, a low-bitrate codec: `VoiceFeatures.bandwidth_hz` under 7.5 kHz), cepstral statistics
  would map the band one of them lacks onto the other's (lifting an empty band by 160 dB into noise), so the mean
  envelope is matched instead, frequency by frequency, only within the band both have; above it the source's
  envelope is left as it is: no band the source lacks is ever amplified.
- Level: the output is scaled to the target's active speech level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyworld

from voxserve.conversion.base import ConversionOptions
from voxserve.conversion.features import FORMANT_BAND_HZ, GRID_HZ, VoiceFeatures
from voxserve.conversion.world import WorldFrames, analyze, synthesize
from voxserve.types import AudioChunk

WARP_RANGE = (0.8, 1.25)
WIDEBAND_HZ = 7500.0
BAND_EDGE_HZ = 400.0  # the envelope match fades out over this much below the shared band's edge
MAX_MATCH_DB = 20.0  # no frequency moved further than this by the in-band match
WARP_STEPS = 46
MAX_GAIN_DB = 20.0


@dataclass(frozen=True, slots=True)
class WorldPlan:
    source: VoiceFeatures
    target: VoiceFeatures
    pitch_factor: float
    warp: float
    envelope_strength: float
    gain: float
    band_hz: float = GRID_HZ[-1]  # the band both recordings have

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        frames = analyze(samples, sample_rate)
        envelope = warp_envelope(frames.envelope, self.warp)
        if self.envelope_strength > 0:
            envelope = self._match_envelope(envelope, frames.sample_rate)
        converted = WorldFrames(self._map_f0(frames.f0), envelope, frames.aperiodicity, frames.sample_rate)
        return synthesize(converted, sample_rate, len(samples)) * np.float32(self.gain)

    def _match_in_band(self, envelope: np.ndarray, sample_rate: int) -> np.ndarray:
        """Each frequency under the shared band's edge moved by the difference between the target's mean log
        envelope and the (warped) source's, level aside; nothing above the edge."""
        source = np.interp(GRID_HZ / self.warp, GRID_HZ, self.source.mean_log_envelope)
        difference = self.target.mean_log_envelope - source
        in_band = (FORMANT_BAND_HZ[0] <= GRID_HZ) & (self.band_hz >= GRID_HZ)
        difference -= difference[in_band].mean()  # the level stays the source's; the plan's gain sets it
        fade = np.clip((self.band_hz - GRID_HZ) / BAND_EDGE_HZ, 0.0, 1.0)
        limit = MAX_MATCH_DB / (10 * np.log10(np.e))
        correction = self.envelope_strength * np.clip(difference, -limit, limit) * fade
        bins_hz = np.linspace(0.0, sample_rate / 2, envelope.shape[1])
        return envelope * np.exp(np.interp(bins_hz, GRID_HZ, correction, right=0.0))

    def _map_f0(self, f0: np.ndarray) -> np.ndarray:
        voiced = f0 > 0
        mapped = np.zeros_like(f0)
        # Centred on the medians: what a listener (and a pitch tracker) takes for a voice's pitch. The means sit
        # lower wherever a recording has a tail of low, creaky frames (6% under the median for the higher voice).
        source_centre, target_centre = np.log(self.source.f0_median_hz), np.log(self.target.f0_median_hz)
        standard = (np.log(f0[voiced]) - source_centre) / max(self.source.log_f0_std, 1e-3)
        mapped[voiced] = np.exp(standard * self.target.log_f0_std + target_centre) * self.pitch_factor
        return mapped

    def _match_envelope(self, envelope: np.ndarray, sample_rate: int) -> np.ndarray:
        if self.band_hz < WIDEBAND_HZ:
            return self._match_in_band(envelope, sample_rate)
        coded = pyworld.code_spectral_envelope(envelope, sample_rate, len(self.source.envelope_mean))
        source, target = self.source, self.target
        standard = (coded[:, 1:] - source.envelope_mean[1:]) / np.maximum(source.envelope_std[1:], 1e-6)
        matched = standard * target.envelope_std[1:] + target.envelope_mean[1:]
        coded[:, 1:] += self.envelope_strength * (matched - coded[:, 1:])
        fft_size = (envelope.shape[1] - 1) * 2
        return pyworld.decode_spectral_envelope(np.ascontiguousarray(coded), sample_rate, fft_size)


class WorldConverter:
    name = "world"

    def __init__(self, envelope_strength: float = 1.0) -> None:
        self.envelope_strength = envelope_strength

    def plan(self, source: VoiceFeatures, target: VoiceFeatures, options: ConversionOptions) -> WorldPlan:
        gain_db = np.clip(target.loudness_dbfs - source.loudness_dbfs, -MAX_GAIN_DB, MAX_GAIN_DB)
        return WorldPlan(
            source=source,
            target=target,
            pitch_factor=2 ** (options.pitch_shift / 12),
            warp=estimate_warp(source, target) * options.formant_shift,
            envelope_strength=self.envelope_strength,
            gain=float(10 ** (gain_db / 20)),
            band_hz=min(source.bandwidth_hz, target.bandwidth_hz),
        )


def reshape_voice(audio: AudioChunk, pitch_factor: float, warp: float) -> AudioChunk:
    """The same speech from a different speaker: F0 scaled by `pitch_factor` and the vocal tract warped by `warp`
    (references for tests and benchmarks, built from the voices available offline)."""
    frames = analyze(audio.samples, audio.sample_rate)
    moved = WorldFrames(
        frames.f0 * pitch_factor, warp_envelope(frames.envelope, warp), frames.aperiodicity, frames.sample_rate
    )
    return AudioChunk(synthesize(moved, audio.sample_rate, len(audio.samples)), audio.sample_rate)


def estimate_warp(source: VoiceFeatures, target: VoiceFeatures) -> float:
    """The frequency-axis scale that makes the source's mean log envelope (250 Hz-4 kHz, level removed)
    closest to the target's: above 1 for a shorter vocal tract than the source's."""
    band = (FORMANT_BAND_HZ[0] <= GRID_HZ) & (FORMANT_BAND_HZ[1] >= GRID_HZ)
    wanted = target.mean_log_envelope[band] - target.mean_log_envelope[band].mean()
    best, best_error = 1.0, np.inf
    for factor in np.linspace(*WARP_RANGE, WARP_STEPS):
        warped = np.interp(GRID_HZ[band] / factor, GRID_HZ, source.mean_log_envelope)
        error = float(np.sum(np.square(warped - warped.mean() - wanted)))
        if error < best_error:
            best, best_error = float(factor), error
    return best


def warp_envelope(envelope: np.ndarray, factor: float) -> np.ndarray:
    """Each frame's envelope stretched along frequency: the output at f is the input at f / factor."""
    if abs(factor - 1.0) < 1e-3:
        return envelope
    bins = np.arange(envelope.shape[1], dtype=np.float64)
    source_bins = np.clip(bins / factor, 0, envelope.shape[1] - 1)
    low = np.floor(source_bins).astype(int)
    high = np.minimum(low + 1, envelope.shape[1] - 1)
    weight = source_bins - low
    return np.ascontiguousarray(envelope[:, low] * (1 - weight) + envelope[:, high] * weight)
