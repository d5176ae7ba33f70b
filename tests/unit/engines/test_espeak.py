from __future__ import annotations

import numpy as np
import pytest

from voxserve.engines.espeak import EspeakEngine
from voxserve.types import SynthesisParams


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    return EspeakEngine()


def speak(engine: EspeakEngine, voice_id: str, text: str, speed: float = 1.0) -> np.ndarray:
    voice = next(voice for voice in engine.voices() if voice.id == voice_id)
    return engine.run([engine.prepare(SynthesisParams(text=text, voice=voice, speed=speed))])[0].samples


def test_lists_over_a_hundred_languages(engine: EspeakEngine) -> None:
    ids = {voice.id for voice in engine.voices()}
    assert len(ids) > 100
    assert {"espeak:en-us", "espeak:de", "espeak:fr", "espeak:ja"} <= ids


@pytest.mark.parametrize(
    ("voice", "text"),
    [("espeak:en-us", "Good morning."), ("espeak:de", "Guten Morgen."), ("espeak:fr", "Bonjour à tous.")],
)
def test_languages_produce_audio(engine: EspeakEngine, voice: str, text: str) -> None:
    audio = speak(engine, voice, text)
    assert 0.3 < len(audio) / engine.sample_rate < 3.0
    assert np.abs(audio).max() > 0.05


def test_speed_changes_the_rate(engine: EspeakEngine) -> None:
    text = "This sentence is spoken at two different rates."
    assert len(speak(engine, "espeak:en-us", text, speed=2.0)) < 0.7 * len(speak(engine, "espeak:en-us", text))
