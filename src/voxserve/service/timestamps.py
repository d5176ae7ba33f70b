"""Word and phoneme timestamps of a speech response, in the timeline of the audio the client receives.

An engine aligns each timed segment (`SegmentAudio.alignment`: where each phoneme and word is in its samples; for
Piper from the durations its model predicts). Here they become seconds from the start of the response: each segment
placed where the crossfade put it, and the phonemes of the whole response tiling its audio (pauses as silence,
viseme 0), so the last one ends exactly where the audio ends. Length scale (`speed`) is in the durations already;
seconds do not depend on the output rate."""

from __future__ import annotations

from dataclasses import dataclass, replace

from voxserve.engines.base import PreparedSegment, SegmentAudio
from voxserve.frontend.alignment import phoneme_units
from voxserve.frontend.visemes import SILENCE, viseme

TIMESTAMP_LEVELS = ("none", "word", "phoneme")
_DIGITS = 6  # seconds to the microsecond: finer than one sample at any output rate


@dataclass(frozen=True, slots=True)
class WordTiming:
    text: str
    start: float
    end: float
    char_start: int  # in the request's input
    char_end: int

    def as_dict(self) -> dict[str, object]:
        return {"text": self.text, "start": self.start, "end": self.end, "char_start": self.char_start,
                "char_end": self.char_end}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PhonemeTiming:
    phoneme: str  # "" for a pause
    start: float
    end: float
    viseme: int

    def as_dict(self) -> dict[str, object]:
        return {"phoneme": self.phoneme, "start": self.start, "end": self.end, "viseme": self.viseme}


@dataclass(frozen=True, slots=True)
class Timestamps:
    """The timings of some stretch of a response: its words, and its phonemes (tiling that stretch)."""

    words: tuple[WordTiming, ...] = ()
    phonemes: tuple[PhonemeTiming, ...] = ()

    def as_dict(self, level: str) -> dict[str, object]:
        payload: dict[str, object] = {"words": [word.as_dict() for word in self.words]}
        if level == "phoneme":
            payload["phonemes"] = [phoneme.as_dict() for phoneme in self.phonemes]
        return payload

    @staticmethod
    def join(parts: list[Timestamps]) -> Timestamps:
        return Timestamps(
            tuple(word for part in parts for word in part.words),
            tuple(phoneme for part in parts for phoneme in part.phonemes),
        )


class InputMap:
    """Where the characters of the normalized text (what segmentation saw) were in the request's input:
    normalization collapses whitespace and drops invisible characters, so offsets shift."""

    def __init__(self, original: str, normalized: str) -> None:
        self.text = original
        self._positions = _positions(original, normalized)
        self._normalized = normalized
        self._cursor = 0

    def place(self, segment_text: str) -> int:
        """Where `segment_text` (the next segment, in order) starts in the normalized text."""
        found = self._normalized.find(segment_text, self._cursor)
        start = self._cursor if found < 0 else found
        self._cursor = start + len(segment_text)
        return start

    def original(self, normalized_index: int) -> int:
        if normalized_index >= len(self._positions):
            return self._positions[-1] + 1 if self._positions else 0
        return self._positions[normalized_index]


class Transcript:
    """The text places of a response whose text streams in: offsets into what is spoken, its segments joined by
    one space (the raw text had markup and line breaks the segments do not)."""

    def __init__(self) -> None:
        self.text = ""

    def place(self, segment_text: str) -> int:
        """Adds the next segment; where it starts."""
        start = len(self.text) + bool(self.text)
        self.text = f"{self.text} {segment_text}" if self.text else segment_text
        return start

    def original(self, index: int) -> int:
        return index


def _positions(original: str, normalized: str) -> list[int]:
    """For each character of `normalized`, its index in `original`; a character normalization changed (Unicode
    composition) takes the position where matching resumed."""
    positions: list[int] = []
    cursor = 0
    for char in normalized:
        if char == " ":
            while cursor < len(original) and not original[cursor].isspace():
                cursor += 1
            positions.append(min(cursor, max(len(original) - 1, 0)))
            while cursor < len(original) and original[cursor].isspace():
                cursor += 1
            continue
        found = original.find(char, cursor, cursor + 8)
        positions.append(found if found >= 0 else min(cursor, max(len(original) - 1, 0)))
        cursor = (found if found >= 0 else cursor) + 1
    return positions


class TimestampBuilder:
    """Turns each segment's durations into timings on the response's timeline, segment by segment in order."""

    def __init__(self, places: InputMap | Transcript, sample_rate: int, *, phonemes: bool = True) -> None:
        self._input = places
        self._rate = sample_rate
        self._phonemes = phonemes  # the phoneme track too, not only the words
        self._floor = 0  # where the previous segment's timings ended, in samples

    def segment(self, prepared: PreparedSegment, audio: SegmentAudio, start: int) -> Timestamps:
        """The timings of one segment whose audio starts at sample `start` of the response (as the crossfade
        placed it; it may overlap the previous segment, whose timings then keep their end)."""
        text_start = self._input.place(prepared.params.text)
        length = audio.segment_length
        begin = max(start, self._floor)
        self._floor = max(start + length, begin)
        alignment = audio.alignment
        if alignment is None or not alignment.phonemes:
            return Timestamps(phonemes=(PhonemeTiming("", self._seconds(begin), self._seconds(self._floor), SILENCE),))
        starts, ends = alignment.starts, alignment.ends

        def at(sample: int) -> int:
            return min(max(start + sample, begin), self._floor)

        units = phoneme_units(alignment.phonemes) if self._phonemes else []
        phonemes: list[PhonemeTiming] = []
        cursor = begin
        lead = at(int(starts[units[0][0]])) if units else begin
        if lead > begin:
            phonemes.append(PhonemeTiming("", self._seconds(begin), self._seconds(lead), SILENCE))
            cursor = lead
        for index, (first, last, is_sound) in enumerate(units):
            end = max(cursor, self._floor if index == len(units) - 1 else at(int(ends[first:last].max())))
            if is_sound:
                symbol = alignment.phonemes[first:last]
                phonemes.append(PhonemeTiming(symbol, self._seconds(cursor), self._seconds(end), viseme(symbol)))
            elif phonemes and not phonemes[-1].phoneme:
                phonemes[-1] = replace(phonemes[-1], end=self._seconds(end))
            elif end > cursor:
                phonemes.append(PhonemeTiming("", self._seconds(cursor), self._seconds(end), SILENCE))
            cursor = end
        words = tuple(
            WordTiming(
                text=self._input.text[self._input.original(text_start + word.char_start):
                                    self._input.original(text_start + word.char_end - 1) + 1],
                start=self._seconds(at(int(starts[word.first]))),
                end=self._seconds(at(int(ends[word.last - 1]))),
                char_start=self._input.original(text_start + word.char_start),
                char_end=self._input.original(text_start + word.char_end - 1) + 1,
            )
            for word in alignment.words
        )  # fmt: skip
        return Timestamps(words, tuple(phonemes))

    def _seconds(self, sample: int) -> float:
        return round(sample / self._rate, _DIGITS)
