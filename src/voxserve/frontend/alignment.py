"""Which words of a segment's text each of its phonemes speaks, and how its phoneme string divides into units
(one sound each, with its stress and length marks) and pauses.

espeak-ng phonemizes a whole clause at once, so numbers, abbreviations and symbols come out as several phoneme
words, or as none. Each word of the text is phonemized again on its own, and the clause's phonemes are aligned to
those (a sequence alignment on the sound symbols; stress is left out, as it shifts with context): every sound of
the clause then belongs to one word, in order."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from voxserve.frontend.visemes import VISEMES

STRESS = "ˈˌ"
_TOKEN = re.compile(r"\S+")
# Punctuation around a word is not part of it ("(Hello," -> "Hello"); symbols that are spoken ("$5", "50%") are.
_PAIRS = frozenset(unit for unit in VISEMES if len(unit) == 2)  # diphthongs and affricates: one sound each
_EDGE_PUNCTUATION = "\"'“”‘’«»()[]{}<>.,;:!?…-–—/\\*_`"


@dataclass(frozen=True, slots=True)
class WordSpan:
    """A word of a segment: characters `[char_start, char_end)` of its text, spoken by the characters
    `[first, last)` of its phoneme string."""

    char_start: int
    char_end: int
    first: int
    last: int


def words_of(text: str) -> list[tuple[int, int]]:
    """Each word's `[start, end)` in `text`: runs of non-space characters without the punctuation around them."""
    spans = []
    for match in _TOKEN.finditer(text):
        start, end = match.span()
        while start < end and text[start] in _EDGE_PUNCTUATION:
            start += 1
        while end > start and text[end - 1] in _EDGE_PUNCTUATION:
            end -= 1
        if start < end:
            spans.append((start, end))
    return spans


def is_sound(char: str) -> bool:
    """A symbol that is a sound of its own (a letter of the IPA), not a modifier letter (stress, length, the
    linking glide `ʲ`) or a pause mark."""
    return unicodedata.category(char) in ("Ll", "Lu", "Lo", "Lt")


def align_words(
    text: str, phonemes: str, phonemize: Callable[[str], str], spans: Sequence[tuple[int, int]] | None = None
) -> list[WordSpan]:
    """The words of `text` with the part of `phonemes` (the whole segment's, as the model got them) each speaks.
    `phonemize` gives one word's phonemes on its own. Words that no sound belongs to are left out."""
    spans = words_of(text) if spans is None else spans
    clause = [index for index, char in enumerate(phonemes) if is_sound(char)]
    alone = [(word, char) for word, (start, end) in enumerate(spans) for char in phonemize(text[start:end])
             if is_sound(char)]  # fmt: skip
    if not clause or not alone:
        return []
    owner = [-1] * len(clause)
    matcher = SequenceMatcher(None, [phonemes[i] for i in clause], [char for _, char in alone], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("equal", "replace"):
            for n in range(i1, i2):
                owner[n] = alone[j1 + (n - i1) * (j2 - j1) // (i2 - i1)][0]
    # Sounds the words alone do not have go with the word before them (or after, at the start); words stay in order.
    first_known = next((word for word in owner if word >= 0), 0)
    current = first_known
    for n, word in enumerate(owner):
        current = max(current, word)
        owner[n] = current
    words: list[WordSpan] = []
    for n, index in enumerate(clause):
        word = owner[n]
        first = _with_stress(phonemes, index)
        if words and words[-1].char_start == spans[word][0]:
            words[-1] = WordSpan(spans[word][0], spans[word][1], words[-1].first, _with_marks(phonemes, index))
        else:
            words.append(WordSpan(spans[word][0], spans[word][1], first, _with_marks(phonemes, index)))
    return words


def phoneme_units(phonemes: str) -> list[tuple[int, int, bool]]:
    """`phonemes` cut into consecutive units `(start, end, is_sound)` covering all of it: a sound (diphthongs and
    affricates as one) with the stress marks before it and the length marks after it, or a run of anything else
    (spaces, punctuation: pauses)."""
    units: list[tuple[int, int, bool]] = []
    index = 0
    while index < len(phonemes):
        start = index
        while index < len(phonemes) and phonemes[index] in STRESS:
            index += 1
        if index < len(phonemes) and is_sound(phonemes[index]):
            pair = phonemes[index : index + 2]
            unit = pair if pair in _PAIRS else phonemes[index]
            index = _with_marks(phonemes, index + len(unit) - 1)
            units.append((start, index, True))
            continue
        index = max(index, start + 1)
        while index < len(phonemes) and not is_sound(phonemes[index]) and phonemes[index] not in STRESS:
            index += 1
        if units and not units[-1][2]:
            units[-1] = (units[-1][0], index, False)
        else:
            units.append((start, index, False))
    return units


def _with_stress(phonemes: str, index: int) -> int:
    while index > 0 and phonemes[index - 1] in STRESS:
        index -= 1
    return index


def _with_marks(phonemes: str, index: int) -> int:
    """The end of the sound at `index` with the modifier letters (length, glides) and diacritics after it."""
    index += 1
    while index < len(phonemes) and _is_mark(phonemes[index]):
        index += 1
    return index


def _is_mark(char: str) -> bool:
    return char not in STRESS and unicodedata.category(char) in ("Lm", "Mn")
