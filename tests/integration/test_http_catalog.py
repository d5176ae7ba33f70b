"""Models, voices, health and readiness."""

from __future__ import annotations

import httpx
import numpy as np

from tests.conftest import decode
from tests.voicegen import SAMPLE_RATE


def test_models_list_openai_names_and_engines(http: httpx.Client) -> None:
    ids = {model["id"] for model in http.get("/v1/models").json()["data"]}
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "piper", "espeak"} <= ids


def test_voices_list_bundled_espeak_and_directory_voices(http: httpx.Client) -> None:
    listing = http.get("/v1/audio/voices").json()
    voices = {voice["id"]: voice for voice in listing["data"]}
    assert listing["default"] == "en_US-joe-medium"
    assert voices["en_US-joe-medium"]["sample_rate"] == 22050
    assert voices["en_US-joe-medium"]["engine"] == "piper"
    assert {"espeak:en-us", "espeak:de", "espeak:fr"} <= set(voices)
    assert voices["en_US-tone-test@alice"]["speakers"] == ["alice"]
    assert voices["en_US-tone-test@bob"]["sample_rate"] == SAMPLE_RATE
    assert listing["aliases"]["alloy"] == "en_US-joe-medium"


def test_each_speaker_of_a_multi_speaker_voice_is_its_own_voice(http: httpx.Client) -> None:
    pitches = []
    for voice in ("en_US-tone-test@alice", "en_US-tone-test@bob"):
        response = http.post("/v1/audio/speech", json={"input": "Hello.", "voice": voice, "response_format": "flac"})
        samples, rate = decode(response.content)
        assert rate == SAMPLE_RATE
        crossings = np.count_nonzero(np.diff(np.signbit(samples)))
        pitches.append(crossings / len(samples))
    assert 1.8 < pitches[1] / pitches[0] < 2.2


def test_configured_alias_reaches_its_voice(http: httpx.Client) -> None:
    response = http.post("/v1/audio/speech", json={"input": "Hello.", "voice": "tone", "response_format": "wav"})
    assert response.headers["x-voxserve-voice"] == "en_US-tone-test@alice"


def test_health_and_ready(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
