"""The quality gate on part of the corpus (the whole of it is `benchmarks/quality.py`'s): voxserve's speech against
the model alone, through the server's own speech path in-process, noise scales 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voxserve.bench.asr import word_error_rate
from voxserve.bench.corpus import load_corpus
from voxserve.bench.quality import PIPER_VOICE, heard, loudness_report, round_trip, speak, whole_sentence_decodes
from voxserve.service.bootstrap import build_speech_service
from voxserve.service.speech import SpeechService
from voxserve.settings import Settings
from voxserve.types import AudioChunk

LINES = load_corpus(Path(__file__).parents[2] / "benchmarks" / "corpus.txt")[4:16]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        noise_scale=0.0, noise_w=0.0, audio_cache_bytes=0, warmup=False, data_dir=tmp_path_factory.mktemp("quality")
    )


@pytest.fixture(scope="module")
def speech(settings: Settings) -> Iterator[SpeechService]:
    service = build_speech_service(settings)
    yield service
    service.close()


@pytest.fixture(scope="module")
def raw(speech: SpeechService) -> list[AudioChunk]:
    return whole_sentence_decodes(speech, LINES)


@pytest.mark.parametrize("voice", [PIPER_VOICE, "espeak:en-us"])
def test_a_voice_lands_on_the_target_and_nothing_passes_the_ceiling(speech: SpeechService, voice: str) -> None:
    report = loudness_report([speak(speech, voice, line) for line in LINES], peak_ceiling_dbfs=-1.0)
    assert report["corpus_lufs"] == pytest.approx(-18.0, abs=1.0)
    assert report["samples_over_ceiling"] == 0
    assert report["samples_at_full_scale"] == 0
    assert report["true_peak_dbtp"] <= -0.9


def test_whole_sentences_keep_the_models_words_and_length(settings: Settings, raw: list[AudioChunk]) -> None:
    """Windows and the level stage change nothing a listener would notice: the recognizer hears as many words
    right as in the model's own audio, and each response lasts as long as its sentences decoded whole."""
    whole = build_speech_service(settings.model_copy(update={"first_segment_max_chars": settings.max_segment_chars}))
    try:
        outputs = [speak(whole, PIPER_VOICE, line) for line in LINES]
    finally:
        whole.close()
    measured = round_trip(LINES, outputs, raw)
    assert measured["wer"] <= word_error_rate(LINES, [heard(audio) for audio in raw]) + 0.02
    assert measured["duration_vs_whole_decode"]["lines_beyond_2_percent"] == 0
