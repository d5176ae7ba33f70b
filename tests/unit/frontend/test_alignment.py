from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from voxserve.bench.corpus import load_corpus
from voxserve.frontend.alignment import align_words, is_sound, phoneme_units, words_of
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.frontend.visemes import SILENCE, VISEMES, viseme

CORPUS = Path(__file__).parents[3] / "benchmarks" / "corpus.txt"


@pytest.fixture(scope="module")
def phonemizer() -> EspeakPhonemizer:
    return EspeakPhonemizer()


def aligned(phonemizer: EspeakPhonemizer, text: str) -> list[tuple[str, str]]:
    phonemes = phonemizer.phonemize(text, "en-us")
    words = align_words(text, phonemes, lambda word: phonemizer.phonemize(word, "en-us"))
    return [(text[w.char_start : w.char_end], phonemes[w.first : w.last]) for w in words]


def test_words_leave_the_punctuation_around_them_out() -> None:
    text = '"Hello," she said (twice) -- $5, 50% off... e.g.'
    assert [text[start:end] for start, end in words_of(text)] == [
        "Hello", "she", "said", "twice", "$5", "50%", "off", "e.g",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith paid $1,990.50 on 3/4/2021, didn't he?",
         [("Dr", "dˈɑːktɚ"), ("Smith", "smˈɪθ"), ("paid", "pˈeɪd"),
          ("$1,990.50", "dˈɑːlɚ wˈʌn θˈaʊzənd nˈaɪnhˈʌndɹɪd nˈaɪnti pɔɪnt fˈaɪv zˈiəɹoʊ"), ("on", "ˌɔn"),
          ("3/4/2021", "θɹˈiː slˈæʃ fˈɔːɹ slˈæʃ tˈuː θˈaʊzənd twˈɛnti wˈʌn"), ("didn't", "dˈɪdnt"), ("he", "hiː")]),
        ("I read the book, and now I'll read it again.",
         [("I", "aɪ"), ("read", "ɹˈiːd"), ("the", "ðə"), ("book", "bˈʊk"), ("and", "ænd"), ("now", "nˈaʊ"),
          ("I'll", "aɪl"), ("read", "ɹˈiːd"), ("it", "ɪɾ"), ("again", "ɐɡˈɛn")]),
    ],
)  # fmt: skip
def test_numbers_abbreviations_and_context_map_to_their_words(
    phonemizer: EspeakPhonemizer, text: str, expected: list[tuple[str, str]]
) -> None:
    assert aligned(phonemizer, text) == expected


def test_every_corpus_line_gives_its_words_in_order_without_overlap(phonemizer: EspeakPhonemizer) -> None:
    for line in load_corpus(CORPUS):
        phonemes = phonemizer.phonemize(line, "en-us")
        words = align_words(line, phonemes, lambda word: phonemizer.phonemize(word, "en-us"))
        spans = words_of(line)
        assert all((w.char_start, w.char_end) in spans for w in words)
        assert len(words) >= 0.9 * len(spans), line
        for before, after in itertools.pairwise(words):
            assert before.char_end <= after.char_start
            assert before.last <= after.first
        # Every sound of the line belongs to a word.
        owned = {index for w in words for index in range(w.first, w.last)}
        assert all(index in owned for index, char in enumerate(phonemes) if is_sound(char)), line


def test_units_cover_the_phonemes_with_diphthongs_and_affricates_whole() -> None:
    phonemes = "tʃˈaɪld, ɹˈiːd."
    units = phoneme_units(phonemes)
    assert "".join(phonemes[start:end] for start, end, _ in units) == phonemes
    assert [(phonemes[start:end], sound) for start, end, sound in units] == [
        ("tʃ", True), ("ˈaɪ", True), ("l", True), ("d", True), (", ", False), ("ɹ", True), ("ˈiː", True),
        ("d", True), (".", False),
    ]  # fmt: skip


def test_every_sound_espeak_makes_for_the_corpus_has_a_viseme_in_the_table(phonemizer: EspeakPhonemizer) -> None:
    for line in load_corpus(CORPUS):
        phonemes = phonemizer.phonemize(line, "en-us")
        for start, end, sound in phoneme_units(phonemes):
            unit = "".join(char for char in phonemes[start:end] if char not in "ˈˌːˑ")
            if sound:
                assert unit in VISEMES or unit[0] in VISEMES, (unit, line)
                assert viseme(phonemes[start:end]) != SILENCE
    assert viseme("") == SILENCE
    assert {VISEMES["aɪ"], VISEMES["p"], VISEMES["f"], VISEMES["ʃ"]} == {11, 21, 18, 16}
