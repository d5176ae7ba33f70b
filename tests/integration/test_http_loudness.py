"""Loudness over HTTP: every voice at the target, per-request targets and `off`, and no sample past the ceiling."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import decode
from voxserve.audio.loudness import integrated_lufs
from voxserve.bench.corpus import load_corpus

CEILING = 10 ** (-1 / 20)
# The loudness target holds for speech at large (one paragraph alone may sit a little over 1 LU from it): the
# benchmark corpus, as one response.
CORPUS = " ".join(load_corpus(Path(__file__).parents[2] / "benchmarks" / "corpus.txt"))
TEXT = CORPUS[: CORPUS.index(" ", 1500)]
SHORT = "They thanked the baker, and walked on toward the mountains. Did they sleep well?"


def spoken(http: httpx.Client, voice: str, text: str = TEXT, **fields: object) -> tuple[np.ndarray, int]:
    """A WAV response's samples, exactly as sent (no resampling, no codec)."""
    response = http.post("/v1/audio/speech", json={"input": text, "voice": voice, "response_format": "wav", **fields})
    assert response.status_code == 200, response.text
    with wave.open(io.BytesIO(response.content)) as wav:
        frames = wav.readframes(wav.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32767, wav.getframerate()


@pytest.mark.parametrize("voice", ["en_US-joe-medium", "espeak:en-us", "espeak:en-gb-x-rp", "tone"])
def test_every_engine_lands_within_one_lu_of_the_target(http: httpx.Client, voice: str) -> None:
    samples, rate = spoken(http, voice)
    assert integrated_lufs(samples, rate) == pytest.approx(-18.0, abs=1.0)
    assert np.max(np.abs(samples)) <= CEILING


def test_a_request_target_scales_the_voice_and_off_leaves_its_own_level(http: httpx.Client) -> None:
    normal, rate = spoken(http, "en_US-joe-medium", SHORT)
    quiet, _ = spoken(http, "en_US-joe-medium", SHORT, loudness=-28)
    quieter, _ = spoken(http, "en_US-joe-medium", SHORT, loudness=-36)
    own, _ = spoken(http, "en_US-joe-medium", SHORT, loudness="off")
    assert integrated_lufs(quiet, rate) == pytest.approx(integrated_lufs(normal, rate) - 10, abs=0.5)
    # One gain per voice and target, not per sentence: below the ceiling, 8 dB apart sample for sample.
    assert 20 * np.log10(np.std(quiet) / np.std(quieter)) == pytest.approx(8.0, abs=0.05)
    assert abs(integrated_lufs(own, rate) - integrated_lufs(normal, rate)) > 3.0


@pytest.mark.parametrize("loudness", [-41, -5, "loud", True])
def test_a_loudness_out_of_range_is_a_400_naming_the_field(http: httpx.Client, loudness: object) -> None:
    response = http.post("/v1/audio/speech", json={"input": SHORT, "voice": "en_US-joe-medium", "loudness": loudness})
    assert response.status_code == 400
    assert "loudness" in response.json()["error"]["message"]


@pytest.mark.parametrize("response_format", ["pcm", "mp3", "opus", "aac", "flac"])
def test_no_format_reaches_full_scale(http: httpx.Client, response_format: str) -> None:
    response = http.post(
        "/v1/audio/speech", json={"input": SHORT, "voice": "en_US-joe-medium", "response_format": response_format}
    )
    assert response.status_code == 200
    if response_format == "pcm":
        samples = np.frombuffer(response.content, dtype="<i2").astype(np.float32) / 32768
    else:
        samples, _ = decode(response.content)
        samples = samples / (32768 if np.max(np.abs(samples)) > 2 else 1)  # integer sample formats decode unscaled
    assert np.max(np.abs(samples)) < 0.999
