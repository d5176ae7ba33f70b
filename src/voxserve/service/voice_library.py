"""`VoiceLibrary`: custom voices (registered from a reference recording) and the features of every voice a
conversion may start from or aim at, behind one LRU cache with hit/miss/eviction counts."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable

import numpy as np

from voxserve.cache.lru import CacheStats, LruCache
from voxserve.conversion.features import VoiceFeatures, extract_voice_features
from voxserve.errors import (
    ConflictError,
    InvalidRequestError,
    PayloadTooLargeError,
    PermissionDeniedError,
    VoiceNotFoundError,
)
from voxserve.frontend.segment import segment_text
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import OPENAI_MODEL_NAMES, Settings
from voxserve.storage.voices import CustomVoice, VoiceStore, new_voice_id
from voxserve.types import AudioChunk, Caller, SynthesisParams, VoiceInfo

logger = logging.getLogger(__name__)

# What a built-in voice says to be profiled as a conversion source: about 12 s of varied English.
PROFILE_TEXT = (
    "Welcome back! You have three new messages and one missed call. The meeting has been moved to Thursday "
    "afternoon. Please hold while I connect you to the next available agent. Turn left at the next corner, "
    "then walk two blocks to the station."
)
# An OpenAI model name accepts a voice of any engine.
ANY_MODEL = OPENAI_MODEL_NAMES[0]
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")


class VoiceLibrary:
    def __init__(self, store: VoiceStore, registry: VoiceRegistry, settings: Settings) -> None:
        self.store = store
        self._registry = registry
        self._settings = settings
        self._cache: LruCache[str, VoiceFeatures] = LruCache(settings.voice_cache_size)

    def register(
        self, name: str, reference: AudioChunk, base_voice: str | None = None, *, owner: Caller = Caller(),
        shared: bool = False,
    ) -> CustomVoice:  # fmt: skip
        """Analyse `reference` and persist it as voice `name`, spoken by `base_voice` (default: the configured
        base, else the built-in voice closest in pitch), owned by `owner`'s key. Only an admin may make a voice
        `shared`. Blocking: call it from a worker thread."""
        if shared and not owner.admin:
            raise PermissionDeniedError("only an admin key may share a voice", param="shared")
        self._check_name(name)
        self._check_reference_length(reference)
        features = extract_voice_features(reference)
        base = self._base_voice(base_voice, features)
        voice = CustomVoice(
            id=new_voice_id(),
            name=name,
            base_voice=base.id,
            created_at=time.time(),
            reference_s=reference.duration_s,
            sample_rate=reference.sample_rate,
            sha256=hashlib.sha256(reference.samples.tobytes()).hexdigest(),
            owner=owner.key_id,
            shared=shared,
        )
        try:
            self.store.add(voice, features, reference.samples)
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"a voice named {name!r} already exists", param="name", code="voice_exists") from exc
        self._cache.put(_custom_key(voice), features)
        return voice

    def find(self, id_or_name: str, caller: Caller) -> CustomVoice | None:
        """The custom voice `caller` may use by that id or name; another key's voice is as good as absent."""
        voice = self.store.find(id_or_name)
        return voice if voice is not None and caller.sees(voice.owner, voice.shared) else None

    def get(self, id_or_name: str, caller: Caller) -> CustomVoice:
        voice = self.find(id_or_name, caller)
        if voice is None:
            raise VoiceNotFoundError(f"no custom voice {id_or_name!r}", param="voice_id")
        return voice

    def list(self, caller: Caller) -> list[CustomVoice]:
        return [voice for voice in self.store.list() if caller.sees(voice.owner, voice.shared)]

    def share(self, id_or_name: str, shared: bool, caller: Caller) -> CustomVoice:
        if not caller.admin:
            raise PermissionDeniedError("only an admin key may share a voice", param="shared")
        return self.store.set_shared(self.get(id_or_name, caller), shared)

    def delete(self, id_or_name: str, caller: Caller) -> CustomVoice:
        """Remove a voice `caller` owns; a voice it only sees (shared) answers 404 like one it cannot see."""
        voice = self.get(id_or_name, caller)
        if not caller.manages(voice.owner):
            raise VoiceNotFoundError(f"no custom voice {id_or_name!r} of this key", param="voice_id")
        if not self.store.delete(voice):
            raise VoiceNotFoundError(f"no custom voice {id_or_name!r}", param="voice_id")
        return voice

    def features(self, voice: CustomVoice) -> VoiceFeatures:
        """A custom voice's features: from the cache, else read from disk (no re-analysis)."""
        return self._cached(_custom_key(voice), lambda: self.store.features(voice))

    def builtin_features(self, voice: VoiceInfo) -> VoiceFeatures:
        """A built-in voice's features, measured once on `PROFILE_TEXT` spoken by the voice itself."""
        return self._cached(f"builtin:{voice.id}", lambda: extract_voice_features(self._speak_profile(voice)))

    def recording_features(self, recording: AudioChunk) -> VoiceFeatures:
        """Features of an uploaded target recording, cached by its content."""
        self._check_reference_length(recording, param="target")
        key = "sha256:" + hashlib.sha256(recording.samples.tobytes()).hexdigest()
        return self._cached(key, lambda: extract_voice_features(recording))

    def target_features(self, id_or_name: str, caller: Caller) -> VoiceFeatures:
        """Features of a voice named in a request: custom (by id or name, if `caller` sees it) or built-in."""
        custom = self.find(id_or_name, caller)
        if custom is not None:
            return self.features(custom)
        return self.builtin_features(self._registry.resolve(id_or_name, ANY_MODEL))

    def preload(self) -> None:
        """Load the configured voices' features (and their base voices') so first requests find them cached."""
        for id_or_name in self._settings.voice_preload:
            voice = self.store.find(id_or_name)
            if voice is None:
                logger.warning("voice_preload names %r, which is not a custom voice; skipped", id_or_name)
                continue
            self.features(voice)
            self.builtin_features(self._registry.resolve(voice.base_voice, ANY_MODEL))

    def stats(self) -> CacheStats:
        return self._cache.stats()

    def close(self) -> None:
        self.store.close()

    def _cached(self, key: str, compute: Callable[[], VoiceFeatures]) -> VoiceFeatures:
        features = self._cache.get(key)
        if features is None:
            features = compute()
            self._cache.put(key, features)
        return features

    def _check_name(self, name: str) -> None:
        if not _VOICE_NAME.fullmatch(name):
            raise InvalidRequestError(
                "name: 1-64 characters of letters, digits, space, '.', '_' or '-', starting with a letter or digit",
                param="name",
            )
        builtin = {voice.id for voice in self._registry.voices()} | set(self._registry.aliases())
        if name in builtin:
            raise ConflictError(f"{name!r} is a built-in voice name", param="name", code="voice_exists")

    def _check_reference_length(self, reference: AudioChunk, param: str = "file") -> None:
        low, high = self._settings.reference_min_s, self._settings.reference_max_s
        if reference.duration_s < low:
            raise InvalidRequestError(
                f"{param}: the reference is {reference.duration_s:.1f} s; at least {low:g} s of speech is needed",
                param=param,
                code="audio_too_short",
            )
        if reference.duration_s > high:
            raise PayloadTooLargeError(
                f"{param}: the reference is {reference.duration_s:.1f} s; the limit is {high:g} s",
                param=param,
                code="audio_too_long",
            )

    def _base_voice(self, requested: str | None, features: VoiceFeatures) -> VoiceInfo:
        chosen = requested or self._settings.custom_voice_base
        if chosen:
            return self._registry.resolve(chosen, ANY_MODEL)
        engine = self._registry.default_voice.engine
        candidates = [voice for voice in self._registry.voices() if voice.engine == engine]
        return min(
            candidates,
            key=lambda voice: abs(self.builtin_features(voice).log_f0_mean - features.log_f0_mean),
        )

    def _speak_profile(self, voice: VoiceInfo) -> AudioChunk:
        engine = self._registry.engine(voice)
        texts = segment_text(
            PROFILE_TEXT,
            first_segment_max_chars=self._settings.max_segment_chars,
            max_segment_chars=self._settings.max_segment_chars,
        )
        segments = [engine.prepare(SynthesisParams(text=text, voice=voice)) for text in texts]
        audio = np.concatenate([engine.run([segment], solo=True)[0] for segment in segments])
        return AudioChunk(audio, voice.sample_rate)


def _custom_key(voice: CustomVoice) -> str:
    return f"custom:{voice.id}"
