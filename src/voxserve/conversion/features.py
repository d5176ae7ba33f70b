"""`VoiceFeatures`: what a recording says about its speaker, in numbers a converter can aim at.

F0 statistics (log-F0 mean and spread over voiced frames), spectral-envelope statistics (mean and spread of each
mel-cepstral coefficient), the mean log envelope on a fixed frequency grid (for vocal-tract warp estimates
between voices, and the recording's bandwidth) and the active speech level."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from voxserve.conversion.world import WorldFrames, analyze
from voxserve.errors import InvalidRequestError
from voxserve.types import AudioChunk

GRID_HZ = np.linspace(0.0, 8000.0, 161)
# Frames quieter than this below the loudest frame are pauses, not speech, when measuring the speech level.
ACTIVE_RANGE_DB = 40.0
SILENCE_DBFS = -60.0
MIN_VOICED_RATIO = 0.05
LEVEL_FRAME_S = 0.02
FORMANT_BAND_HZ = (250.0, 4000.0)
# A band more than this below the 1-3 kHz level is empty (a phone line's or a codec's cut), not speech: speech's
# own highs stay within about 35 dB of it up to 8 kHz.
EMPTY_BAND_DB = 45.0
_REFERENCE_BAND_HZ = (1000.0, 3000.0)


@dataclass(frozen=True, slots=True)
class VoiceFeatures:
    duration_s: float
    voiced_ratio: float
    log_f0_mean: float
    log_f0_std: float
    f0_median_hz: float
    loudness_dbfs: float
    envelope_mean: np.ndarray
    envelope_std: np.ndarray
    mean_log_envelope: np.ndarray

    @property
    def formant_centroid_hz(self) -> float:
        """Centroid of the mean envelope's power between 250 Hz and 4 kHz: higher for shorter vocal tracts."""
        band = (FORMANT_BAND_HZ[0] <= GRID_HZ) & (FORMANT_BAND_HZ[1] >= GRID_HZ)
        power = np.exp(self.mean_log_envelope[band])
        return float(np.sum(GRID_HZ[band] * power) / np.sum(power))

    @property
    def bandwidth_hz(self) -> float:
        """Where the recording's spectrum ends: the highest frequency (up to 8 kHz) whose mean level is within
        `EMPTY_BAND_DB` of the 1-3 kHz level; about 3.9 kHz for telephone audio, 8 kHz for wideband speech."""
        level_db = 10 * np.log10(np.e) * self.mean_log_envelope
        reference = (_REFERENCE_BAND_HZ[0] <= GRID_HZ) & (_REFERENCE_BAND_HZ[1] >= GRID_HZ)
        present = np.nonzero(level_db >= np.median(level_db[reference]) - EMPTY_BAND_DB)[0]
        return float(GRID_HZ[present[-1]]) if len(present) else float(GRID_HZ[-1])

    def summary(self) -> dict[str, float]:
        """The scalar features, rounded, for API responses and logs."""
        return {
            "duration_s": round(self.duration_s, 3),
            "voiced_ratio": round(self.voiced_ratio, 3),
            "f0_median_hz": round(self.f0_median_hz, 1),
            "log_f0_mean": round(self.log_f0_mean, 4),
            "log_f0_std": round(self.log_f0_std, 4),
            "loudness_dbfs": round(self.loudness_dbfs, 2),
            "formant_centroid_hz": round(self.formant_centroid_hz, 1),
            "bandwidth_hz": round(self.bandwidth_hz),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in asdict(self).items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> VoiceFeatures:
        values = {name: arrays[name] for name in cls.__dataclass_fields__}
        scalars = {name: float(value) for name, value in values.items() if np.ndim(value) == 0}
        return cls(**{**values, **scalars})


def extract_voice_features(audio: AudioChunk) -> VoiceFeatures:
    """Analyse a recording of one speaker. Raises `InvalidRequestError` for silence or audio with no voiced
    speech, naming which."""
    loudness = speech_level_dbfs(audio)
    if loudness < SILENCE_DBFS:
        raise InvalidRequestError(f"the audio is silent (level {loudness:.0f} dBFS)", code="silent_audio")
    frames = analyze(audio.samples, audio.sample_rate, aperiodicity=False)
    return features_of(frames, audio.duration_s, loudness)


def features_of(frames: WorldFrames, duration_s: float, loudness_dbfs: float) -> VoiceFeatures:
    voiced = frames.voiced
    voiced_ratio = float(voiced.mean()) if len(voiced) else 0.0
    if voiced_ratio < MIN_VOICED_RATIO:
        raise InvalidRequestError("no voiced speech found in the audio", code="no_speech")
    log_f0 = np.log(frames.f0[voiced])
    coded = frames.coded_envelope()[voiced]
    return VoiceFeatures(
        duration_s=duration_s,
        voiced_ratio=voiced_ratio,
        log_f0_mean=float(log_f0.mean()),
        log_f0_std=float(log_f0.std()),
        f0_median_hz=float(np.exp(np.median(log_f0))),
        loudness_dbfs=loudness_dbfs,
        envelope_mean=coded.mean(axis=0),
        envelope_std=coded.std(axis=0),
        mean_log_envelope=_mean_log_envelope(frames.envelope[voiced], frames.sample_rate),
    )


def _mean_log_envelope(envelope: np.ndarray, sample_rate: int) -> np.ndarray:
    bins_hz = np.linspace(0.0, sample_rate / 2, envelope.shape[1])
    mean_log = np.log(envelope + 1e-12).mean(axis=0)
    return np.interp(GRID_HZ, bins_hz, mean_log)


def speech_level_dbfs(audio: AudioChunk) -> float:
    """Active speech level: mean power of the frames within 40 dB of the loudest, in dB full scale."""
    frame = max(1, round(LEVEL_FRAME_S * audio.sample_rate))
    count = len(audio.samples) // frame
    if count == 0:
        return -np.inf
    power = np.mean(np.square(audio.samples[: count * frame].reshape(count, frame), dtype=np.float64), axis=1)
    peak = power.max()
    if peak <= 0:
        return -np.inf
    active = power[power >= peak * 10 ** (-ACTIVE_RANGE_DB / 10)]
    return float(10 * np.log10(active.mean()))
