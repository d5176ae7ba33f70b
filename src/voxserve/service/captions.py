"""Captions from word timestamps: cues of at most `max_chars` characters, broken at word boundaries, at sentence
ends and at pauses, written as SRT, WebVTT or JSON. The cues cover the audio from the first word to its end: each
lasts until the next begins, the last until the audio ends."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass

from voxserve.service.timestamps import WordTiming

CAPTION_FORMATS = {"srt": "application/x-subrip", "vtt": "text/vtt", "json": "application/json"}
PAUSE_S = 0.35  # a silence this long between words starts a new cue
CAPTION_MAX_CHARS = 42  # the usual subtitle line
_TRAILING = ".,;:!?…\"'”’)]"


@dataclass(frozen=True, slots=True)
class Cue:
    start: float
    end: float
    text: str


def caption_cues(text: str, words: Sequence[WordTiming], audio_s: float, max_chars: int) -> list[Cue]:
    """`words` (timed, with offsets into `text`) grouped into cues. A cue's text is the input from its first word
    to its last, with the punctuation right after it; a single word longer than `max_chars` is a cue of its own."""
    groups: list[list[WordTiming]] = []
    for word in words:
        if groups:
            group = groups[-1]
            candidate = _cue_text(text, group[0], word)
            joined = not _ends_sentence(text, group[-1]) and word.start - group[-1].end < PAUSE_S
            if joined and len(candidate) <= max_chars:
                group.append(word)
                continue
        groups.append([word])
    cues = []
    for index, group in enumerate(groups):
        end = groups[index + 1][0].start if index + 1 < len(groups) else max(audio_s, group[-1].end)
        cues.append(Cue(group[0].start, max(end, group[-1].end), _cue_text(text, group[0], group[-1])))
    return cues


def _ends_sentence(text: str, word: WordTiming) -> bool:
    end = word.char_end
    while end < len(text) and text[end] in _TRAILING:
        if text[end] in ".!?…":
            return True
        end += 1
    return False


def _cue_text(text: str, first: WordTiming, last: WordTiming) -> str:
    end = last.char_end
    while end < len(text) and text[end] in _TRAILING:
        end += 1
    return " ".join(text[first.char_start : end].split())


def render(cues: Sequence[Cue], caption_format: str) -> str:
    if caption_format == "json":
        return json.dumps({"cues": [{"start": c.start, "end": c.end, "text": c.text} for c in cues]})
    if caption_format == "srt":
        # SRT has no escapes; an arrow in the text would read as a timing line.
        return "".join(
            f"{number}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{cue.text.replace('-->', '->')}\n\n"
            for number, cue in enumerate(cues, start=1)
        )
    return "WEBVTT\n\n" + "".join(
        f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{html.escape(cue.text, quote=False)}\n\n" for cue in cues
    )


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
