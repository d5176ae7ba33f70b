"""Voice features: what they measure on known signals, and their round trip through storage arrays."""

from __future__ import annotations

import numpy as np
import pytest

from voxserve.conversion.features import VoiceFeatures, extract_voice_features
from voxserve.conversion.world_converter import estimate_warp
from voxserve.errors import InvalidRequestError
from voxserve.types import AudioChunk

RATE = 16_000


def buzz(f0_hz: float, seconds: float = 3.0, formant_hz: float = 700.0) -> AudioChunk:
    """A vowel-like sound: a pulse train at `f0_hz` through one resonance at `formant_hz`."""
    t = np.arange(int(seconds * RATE)) / RATE
    pulses = np.zeros_like(t)
    pulses[(np.arange(0, seconds, 1 / f0_hz) * RATE).astype(int)] = 1.0
    kernel_t = np.arange(400) / RATE
    kernel = np.exp(-kernel_t * 300) * np.sin(2 * np.pi * formant_hz * kernel_t)
    signal = np.convolve(pulses, kernel)[: len(t)]
    return AudioChunk((0.3 * signal / np.abs(signal).max()).astype(np.float32), RATE)


def test_f0_statistics_follow_the_pitch() -> None:
    low, high = extract_voice_features(buzz(110.0)), extract_voice_features(buzz(220.0))
    assert low.f0_median_hz == pytest.approx(110.0, rel=0.05)
    assert high.f0_median_hz == pytest.approx(220.0, rel=0.05)
    assert high.log_f0_mean - low.log_f0_mean == pytest.approx(np.log(2), abs=0.05)


def test_warp_estimate_follows_the_resonance() -> None:
    low, high = (
        extract_voice_features(buzz(150.0, formant_hz=700.0)),
        extract_voice_features(buzz(150.0, formant_hz=840.0)),
    )
    assert estimate_warp(low, high) == pytest.approx(1.2, abs=0.05)
    assert estimate_warp(high, low) == pytest.approx(1 / 1.2, abs=0.05)


def test_features_round_trip_through_arrays() -> None:
    features = extract_voice_features(buzz(150.0))
    restored = VoiceFeatures.from_arrays(features.to_arrays())
    assert restored.summary() == features.summary()
    np.testing.assert_array_equal(restored.envelope_mean, features.envelope_mean)


def test_silence_and_unvoiced_noise_are_refused() -> None:
    with pytest.raises(InvalidRequestError) as silent:
        extract_voice_features(AudioChunk(np.zeros(RATE * 2, dtype=np.float32), RATE))
    assert silent.value.code == "silent_audio"
    noise = np.random.default_rng(1).standard_normal(RATE * 2).astype(np.float32) * 0.1
    with pytest.raises(InvalidRequestError) as unvoiced:
        extract_voice_features(AudioChunk(noise, RATE))
    assert unvoiced.value.code == "no_speech"
