"""Text to synthesis segments: sentences, long ones cut at clauses, and a short first segment so audio starts early.

One segmenter serves whole texts and text that arrives in pieces (an LLM's tokens): `SegmentStream` gives each
segment as soon as no later text can change it, and for any way of cutting a text into pieces it gives the same
segments as the whole text at once (`segment_text` is the stream fed once)."""

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
_SENTENCE_END = re.compile(r"""(?<=[.!?…])(["'”’)\]]*)\s+""")
_CLAUSE_END = re.compile(r"""[,;:—–]["'”’)\]]*\s+""")
_WHITESPACE = re.compile(r"\s+")
_LINE_BREAKS = re.compile(r"(\s*\n\s*)")
# Longer than any abbreviation: a word that long can be neither one nor an initial, whatever came before.
_WORD_HEAD_CHARS = 8


def _sentence_ends(text: str, word_head: str = "") -> list[tuple[int, int]]:
    """Where sentences end in `text` (`(end, next_start)`): sentence-final punctuation followed by space, except
    after abbreviations and initials. Each is decided by the text before it and one space after it. `word_head`
    is the start of `text`'s first word where an earlier cut split that word."""
    ends = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = (word_head if start == 0 else "") + text[start : match.start()]
        candidate = candidate.rstrip("\"'”’)]")
        last_word = candidate.rsplit(" ", 1)[-1].rstrip(".").lower()
        if candidate.endswith(".") and (last_word in _ABBREVIATIONS or len(last_word) == 1):
            continue
        ends.append((match.end(1), match.end()))  # closing quotes and brackets stay with their sentence
        start = match.end()
    return ends


def split_sentences(text: str) -> list[str]:
    """Split at sentence-final punctuation followed by space, except after abbreviations and initials."""
    sentences: list[str] = []
    start = 0
    for end, next_start in _sentence_ends(text):
        sentences.append(text[start:end].strip())
        start = next_start
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _cut_point(text: str, max_chars: int) -> int:
    """Where to cut `text` to at most `max_chars`: the last clause boundary that fits, else the last word
    boundary, else (one enormous word) right at the limit. Decided by `text[:max_chars + 1]` alone."""
    cuts = [m.end() for m in _CLAUSE_END.finditer(text, 0, max_chars + 1) if m.end() <= max_chars] or [
        m.end() for m in _WHITESPACE.finditer(text, 0, max_chars + 1) if m.end() <= max_chars
    ]
    return cuts[-1] if cuts else max_chars


class SegmentStream:
    """Segments of text that arrives in pieces of any size. A segment is given once it is decided: a sentence end
    followed by a space (not after an abbreviation or an initial, never a decimal point), a paragraph break (a
    blank line), or pending text past the segment limit (cut at its last clause, else word, boundary). The first
    segment of a response is cut at `first_segment_max_chars`, the rest at `max_segment_chars`; `growing` limits each
    instead to twice the text before it, or that text plus `first_segment_max_chars` when it is short (24, 48, 144,
    then `max_segment_chars` when every cut falls at its limit), for text that arrives as it is written: each segment
    is then decided, and made, while the audio before it still plays. Whitespace
    runs read as one space. Pending text is bounded by the segment limit, whatever arrives."""

    def __init__(self, *, first_segment_max_chars: int, max_segment_chars: int, growing: bool = False) -> None:
        self._first_max = first_segment_max_chars
        self._max = max_segment_chars
        self._growing = growing
        self._given_chars: int | None = None  # the length of the response's segments so far (`None`: none yet)
        self._pending = ""  # words not yet in a segment, single-spaced; never ends in whitespace
        self._spaced = False  # whitespace came after them
        self._newlines = 0  # in that whitespace: two make a paragraph break
        self._word_head = ""  # where a cut at the limit split a word: its part before the cut

    def push(self, text: str) -> list[str]:
        """The segments `text` decided, in order."""
        segments: list[str] = []
        for part in _LINE_BREAKS.split(text):
            if "\n" in part:
                self._spaced = True
                self._newlines = min(self._newlines + part.count("\n"), 2)
            elif part:
                segments += self._append(part)
        return [*segments, *self._decided()]

    def flush(self) -> list[str]:
        """Everything pending, as segments now (a pause in the text: speak what there is)."""
        segments = [*self._decided(), *self._pieces(self._pending)]
        self._pending, self._word_head = "", ""
        return segments

    def end(self) -> list[str]:
        """The last segments; what comes next is a new response, whose first segment is short again."""
        segments = self.flush()
        self._spaced, self._newlines, self._given_chars = False, 0, None
        return segments

    def _append(self, part: str) -> list[str]:
        """Words and spaces with no line break in them; a paragraph break before them ends what is pending."""
        words = part.split()
        if not words:
            self._spaced = True
            return []
        segments: list[str] = []
        spaced = self._spaced or part[0].isspace()
        if spaced and self._newlines >= 2:
            segments = [*self._decided(), *self._pieces(self._pending)]
            self._pending, self._word_head = "", ""
        joined = " ".join(words)
        self._pending = f"{self._pending} {joined}" if spaced and self._pending else self._pending + joined
        self._spaced, self._newlines = part[-1].isspace(), 0
        return segments

    def _decided(self) -> list[str]:
        """The segments pending text holds that no later text can change: its whole sentences, and cuts of a
        sentence past the limit."""
        view = self._pending + (" " if self._spaced else "")
        segments: list[str] = []
        start = 0
        for end, next_start in _sentence_ends(view, self._word_head):
            segments += self._pieces(view[start:end].strip())
            start = next_start
            self._word_head = ""
        self._pending = self._pending[start:]
        while len(self._pending) > (limit := self._limit()):
            cut = _cut_point(self._pending, limit)
            head, self._pending = self._pending[:cut], self._pending[cut:]
            # A cut inside one enormous word: whether a period later ends a sentence depends on the whole word.
            split_word = not head[-1].isspace() and not self._pending[0].isspace()
            word = (self._word_head if " " not in head else "") + head.rsplit(" ", 1)[-1] if split_word else ""
            self._word_head = word[-_WORD_HEAD_CHARS:]
            segments.append(self._given(head.strip()))
            self._pending = self._pending.lstrip()
        return [segment for segment in segments if segment]

    def _pieces(self, sentence: str) -> list[str]:
        """A whole sentence as segments, each within its limit (cut at a clause if one fits, else a word)."""
        pieces = []
        while len(sentence) > (limit := self._limit()):
            cut = _cut_point(sentence, limit)
            pieces.append(self._given(sentence[:cut].strip()))
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(self._given(sentence))
        return [piece for piece in pieces if piece]

    def _given(self, segment: str) -> str:
        self._given_chars = (self._given_chars or 0) + len(segment)
        return segment

    def _limit(self) -> int:
        """The next segment's length limit. The first decides the time to first audio: it is kept short; growing,
        each is at most twice the text before it (or that plus the first's limit, after a short first sentence),
        whose audio plays while it is decided and made."""
        given = self._given_chars
        if given is None:
            return self._first_max
        return min(max(2 * given, given + self._first_max), self._max) if self._growing else self._max


def segment_text(
    text: str, *, first_segment_max_chars: int, max_segment_chars: int, growing: bool = False
) -> list[str]:
    """The segments synthesis runs on, in order; together they hold every word of `text`."""
    stream = SegmentStream(
        first_segment_max_chars=first_segment_max_chars, max_segment_chars=max_segment_chars, growing=growing
    )
    return [*stream.push(normalize_whitespace(text)), *stream.end()]
