"""Text to IPA phonemes exactly as piper makes them: piper's own espeak-ng build (`piper-tts`'s `espeakbridge`).

Piper voices were trained on that phonemization, and it differs from upstream espeak-ng 1.52 (and so from the
library `espeakng-loader` ships): piper's build writes linking glides (`ðɪʲ ˈiːvnɪŋ`) and reduces some function
words (`hɐzbɪn`) where 1.52 does not, so any other espeak-ng gives phoneme ids the voice never saw. The calls are
piper's: one clause at a time, language-switch flags dropped, each clause's punctuation kept (`, ` `: ` `; ` with a
space after, `.` `?` `!` ending a sentence), decomposed to NFD so accents are phonemes of their own."""

from __future__ import annotations

import threading
from typing import Protocol

from piper.phonemize_espeak import EspeakPhonemizer as _PiperEspeak

from voxserve.cache.lru import LruCache
from voxserve.errors import InvalidRequestError


class Phonemizer(Protocol):
    def phonemize(self, text: str, language: str) -> str:
        """IPA phonemes for `text` in `language`, punctuation kept (it shapes the prosody)."""
        ...


class EspeakPhonemizer:
    """Piper's phonemes, in an LRU cache keyed by (language, text) so voices that share a language share entries.
    espeak-ng keeps global state (the voice, the clause reader) in its one library instance, so calls into it
    are serialized; a call costs about 0.3 ms per sentence. A text espeak reads as several sentences (piper
    would synthesize each alone) gives their phonemes joined by a space."""

    def __init__(self, cache_size: int = 10_000) -> None:
        self.cache: LruCache[tuple[str, str], str] = LruCache(cache_size)
        self._espeak = _shared_espeak()

    def phonemize(self, text: str, language: str) -> str:
        phonemes = self.cache.get((language, text))
        if phonemes is None:
            with _ESPEAK_LOCK:
                try:
                    sentences = self._espeak.phonemize(language, text)
                except RuntimeError as exc:
                    raise InvalidRequestError(f"espeak-ng has no language {language!r}", param="voice") from exc
            phonemes = " ".join("".join(sentence) for sentence in sentences if sentence)
            self.cache.put((language, text), phonemes)
        return phonemes


_ESPEAK_LOCK = threading.Lock()
_ESPEAK: _PiperEspeak | None = None


def _shared_espeak() -> _PiperEspeak:
    """The process's one espeak-ng instance (initializing it again would reset what other phonemizers set)."""
    global _ESPEAK
    with _ESPEAK_LOCK:
        if _ESPEAK is None:
            _ESPEAK = _PiperEspeak()
        return _ESPEAK
