"""Text to synthesis segments: sentences, long ones cut at clauses, and a short first segment so audio starts early."""

from __future__ import annotations

import re

from voxserve.frontend.normalize import normalize_whitespace

# Words that end in a period without ending a sentence.
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "e.g", "i.e", "a.m", "p.m",
        "no", "fig", "approx", "dept", "est", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul",
        "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun",
    }
)  # fmt: skip
_SENTENCE_END = re.compile(r"""(?<=[.!?…])["'”’)\]]*\s+""")
_CLAUSE_END = re.compile(r"""[,;:—–]["'”’)\]]*\s+""")
_WHITESPACE = re.compile(r"\s+")


def split_sentences(text: str) -> list[str]:
    """Split at sentence-final punctuation followed by space, except after abbreviations and initials."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.start()].rstrip("\"'”’)]")
        last_word = candidate.rsplit(" ", 1)[-1].rstrip(".").lower()
        if candidate.endswith(".") and (last_word in _ABBREVIATIONS or len(last_word) == 1):
            continue
        sentences.append(text[start : match.start()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _cut_point(text: str, max_chars: int) -> int:
    """Where to cut `text` to at most `max_chars`: the last clause boundary that fits, else the last word
    boundary, else (one enormous word) right at the limit."""
    cuts = [m.end() for m in _CLAUSE_END.finditer(text) if m.end() <= max_chars] or [
        m.end() for m in _WHITESPACE.finditer(text) if m.end() <= max_chars
    ]
    return cuts[-1] if cuts else max_chars


def _split_long(text: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    while len(text) > max_chars:
        cut = _cut_point(text, max_chars)
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    return [*pieces, text] if text else pieces


def segment_text(text: str, *, first_segment_max_chars: int, max_segment_chars: int) -> list[str]:
    """The segments synthesis runs on, in order; together they hold every word of `text`."""
    segments = [
        piece
        for sentence in split_sentences(normalize_whitespace(text))
        for piece in _split_long(sentence, max_segment_chars)
    ]
    if not segments or len(segments[0]) <= first_segment_max_chars:
        return segments
    # The first segment decides the time to first audio: keep it short, at a clause if one fits, else at a word.
    cut = _cut_point(segments[0], first_segment_max_chars)
    return [segments[0][:cut].strip(), segments[0][cut:].strip(), *segments[1:]]
