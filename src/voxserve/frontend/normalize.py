"""Text normalization before segmentation: one Unicode form, no control characters, single spaces."""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
# Control characters, zero-width spaces and bidi marks, which espeak would read or choke on; the joiners
# (U+200C, U+200D) stay: some scripts spell with them.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_MAX_HELD = 32  # a run of combining marks longer than any script writes is let through as it is


def normalize_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def normalize_text(text: str) -> str:
    """NFC-composed text with invisible characters dropped and whitespace runs collapsed to one space."""
    return normalize_whitespace(_INVISIBLE.sub("", unicodedata.normalize("NFC", text)))


class CharacterStream:
    """`normalize_text` for text that arrives in pieces, whitespace aside (the segmenter collapses it, keeping
    paragraph breaks): NFC-composed, invisible characters dropped. A combining mark in the next piece may still
    compose with the last character, so the text from the last base character on is held until more comes (a
    space composes with nothing: text that ends in one is given whole)."""

    def __init__(self) -> None:
        self._held = ""

    def push(self, text: str) -> str:
        combined = unicodedata.normalize("NFC", self._held + text)
        cut = len(combined)
        while cut > 0 and len(combined) - cut < _MAX_HELD:
            cut -= 1
            if not unicodedata.combining(combined[cut]):
                break
        if combined[cut:].isspace():
            cut = len(combined)
        self._held = combined[cut:]
        return _INVISIBLE.sub("", combined[:cut])

    def end(self) -> str:
        held, self._held = self._held, ""
        return _INVISIBLE.sub("", held)
