"""Text to synthesis segments: sentences, with a long first sentence cut at a clause so audio starts early."""

from __future__ import annotations

import re

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


def normalize_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


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


def _split_at(text: str, pattern: re.Pattern[str], max_chars: int) -> list[str]:
    """Cut `text` into pieces of at most `max_chars` at the last `pattern` match that fits (or at a space)."""
    pieces: list[str] = []
    while len(text) > max_chars:
        cuts = [m.end() for m in pattern.finditer(text) if m.end() <= max_chars] or [
            m.end() for m in _WHITESPACE.finditer(text) if m.end() <= max_chars
        ]
        cut = cuts[-1] if cuts else max_chars
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    return [*pieces, text] if text else pieces


def _split_first_clause(sentence: str, max_chars: int) -> list[str]:
    """Cut the first sentence at a clause boundary: the last one within `max_chars`, else the first one."""
    if len(sentence) <= max_chars:
        return [sentence]
    ends = [m.end() for m in _CLAUSE_END.finditer(sentence)]
    fitting = [end for end in ends if end <= max_chars]
    cut = fitting[-1] if fitting else (ends[0] if ends else None)
    if cut is None:
        return [sentence]
    return [sentence[:cut].strip(), sentence[cut:].strip()]


def segment_text(text: str, *, first_segment_max_chars: int, max_segment_chars: int) -> list[str]:
    """The segments synthesis runs on, in order; together they hold every word of `text`."""
    segments = [
        piece
        for sentence in split_sentences(normalize_whitespace(text))
        for piece in _split_at(sentence, _CLAUSE_END, max_segment_chars)
    ]
    if not segments:
        return []
    return [*_split_first_clause(segments[0], first_segment_max_chars), *segments[1:]]
