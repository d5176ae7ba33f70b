"""Text to IPA phonemes with espeak-ng, loaded from the `espeakng-loader` wheel (no system package)."""

from __future__ import annotations

import threading
from typing import Protocol

import espeakng_loader
from phonemizer.backend import EspeakBackend
from phonemizer.backend.espeak.wrapper import EspeakWrapper
from phonemizer.separator import Separator

from voxserve.cache.lru import LruCache
from voxserve.errors import InvalidRequestError

_WORDS = Separator(phone="", word=" ", syllable="")


class Phonemizer(Protocol):
    def phonemize(self, text: str, language: str) -> str:
        """IPA phonemes for `text` in `language`, punctuation kept (it shapes the prosody)."""
        ...


class EspeakPhonemizer:
    """Piper-compatible phonemes: espeak-ng with stress marks and punctuation preserved.

    espeak-ng keeps global state, so each language gets its own library instance (phonemizer copies the
    library per backend) and calls into one instance are serialized. Results are kept in an LRU cache keyed by
    (language, text), so voices that share a language share entries.
    """

    def __init__(self, cache_size: int = 10_000) -> None:
        self.cache: LruCache[tuple[str, str], str] = LruCache(cache_size)
        EspeakWrapper.set_library(espeakng_loader.get_library_path())
        EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
        self._backends: dict[str, tuple[EspeakBackend, threading.Lock]] = {}
        self._lock = threading.Lock()

    def phonemize(self, text: str, language: str) -> str:
        phonemes = self.cache.get((language, text))
        if phonemes is None:
            backend, lock = self._backend(language)
            with lock:
                phonemes = backend.phonemize([text], separator=_WORDS, strip=True)[0]
            self.cache.put((language, text), phonemes)
        return phonemes

    def _backend(self, language: str) -> tuple[EspeakBackend, threading.Lock]:
        with self._lock:
            if language not in self._backends:
                try:
                    backend = EspeakBackend(
                        language, preserve_punctuation=True, with_stress=True, language_switch="remove-flags"
                    )
                except RuntimeError as exc:
                    raise InvalidRequestError(f"espeak-ng has no language {language!r}", param="voice") from exc
                self._backends[language] = (backend, threading.Lock())
            return self._backends[language]
