"""Text normalization before segmentation: one Unicode form, no control characters, single spaces."""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
# Control characters, zero-width spaces and bidi marks, which espeak would read or choke on; the joiners
# (U+200C, U+200D) stay: some scripts spell with them.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def normalize_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def normalize_text(text: str) -> str:
    """NFC-composed text with invisible characters dropped and whitespace runs collapsed to one space."""
    return normalize_whitespace(_INVISIBLE.sub("", unicodedata.normalize("NFC", text)))
