"""`VoiceLibrary`: custom voices (registered from a reference recording) and the features of every voice a
conversion may start from or aim at, behind one LRU cache with hit/miss/eviction counts.

A built-in voice is profiled by having it speak `PROFILE_TEXT` through the shared scheduler, like any request's
segments (later-segment priority, due at the request's deadline), never by calling its engine directly; one
profile per voice runs at a time, and callers that ask meanwhile wait for it."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from voxserve.cache.lru import CacheStats, LruCache
from voxserve.conversion.cancellation import Cancellation
from voxserve.conversion.features import VoiceFeatures, extract_voice_features
from voxserve.errors import (
    ClientDisconnectedError,
    ConflictError,
    DeadlineExceededError,
    InvalidRequestError,
    PayloadTooLargeError,
    PermissionDeniedError,
    VoiceNotFoundError,
)
from voxserve.scheduler.pool import Scheduler
from voxserve.service.rendering import speak_through_scheduler
from voxserve.service.voices import VoiceRegistry
from voxserve.settings import OPENAI_MODEL_NAMES
from voxserve.storage.voices import CustomVoice, VoiceStore, new_voice_id
from voxserve.types import AudioChunk, Caller, VoiceInfo

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


@dataclass(frozen=True, slots=True)
class LibraryOptions:
    """What the voice library is configured with (the composition root fills it from `Settings`)."""

    cache_size: int  # voices' features kept in memory
    preload: tuple[str, ...]  # custom voices (ids or names) whose features load at start-up
    reference_min_s: float
    reference_max_s: float
    request_timeout_s: float  # how long a profile may take when its caller gives no deadline
    custom_voice_base: str | None  # the base voice of new custom voices; None picks the closest in pitch
    max_segment_chars: int


class VoiceLibrary:
    """`scheduler` is the one speech uses, so profiling built-in voices takes its turn with speech segments."""

    def __init__(
        self, store: VoiceStore, registry: VoiceRegistry, options: LibraryOptions, scheduler: Scheduler
    ) -> None:
        self.store = store
        self._registry = registry
        self._options = options
        self._cache: LruCache[str, VoiceFeatures] = LruCache(options.cache_size)
        self._scheduler = scheduler
        self._profiles: dict[str, Future[VoiceFeatures]] = {}
        self._profiles_lock = threading.Lock()

    def register(
        self, name: str, reference: AudioChunk, base_voice: str | None = None, *, owner: Caller = Caller(),
        shared: bool = False, cancellation: Cancellation | None = None,
    ) -> CustomVoice:  # fmt: skip
        """Analyse `reference` and persist it as voice `name`, spoken by `base_voice` (default: the configured
        base, else the built-in voice closest in pitch), owned by `owner`'s key. Only an admin may make a voice
        `shared`. Blocking: call it from a worker thread. It stops between steps once `cancellation` (default:
        `request_timeout_s` from now) is cancelled or past its deadline, and commits it just before storing."""
        cancellation = cancellation or self._new_cancellation()
        if shared and not owner.admin:
            raise PermissionDeniedError("only an admin key may share a voice", param="shared")
        self._check_name(name)
        self._check_reference_length(reference)
        features = extract_voice_features(reference)
        cancellation.check()
        base = self._base_voice(base_voice, features, cancellation, owner.tenant)
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
        cancellation.commit()
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

    def builtin_features(
        self, voice: VoiceInfo, cancellation: Cancellation | None = None, *, tenant: str = ""
    ) -> VoiceFeatures:
        """A built-in voice's features, measured once on `PROFILE_TEXT` spoken by the voice itself through the
        scheduler (as `tenant`'s work). Blocking; stops when `cancellation` (default: `request_timeout_s` from
        now) does. If another caller is profiling the voice, this waits for its result."""
        cancellation = cancellation or self._new_cancellation()
        key = f"builtin:{voice.id}"
        while (features := self._cache.get(key)) is None:
            with self._profiles_lock:
                profile = self._profiles.get(key)
                leading = profile is None
                if profile is None:
                    profile = self._profiles[key] = Future()
            if leading:
                return self._profile(key, profile, voice, cancellation, tenant)
            try:
                return cancellation.wait(profile)
            except (DeadlineExceededError, ClientDisconnectedError):
                if cancellation.cancelled:
                    raise
                # The caller that led the profile gave up (its own deadline or client); lead another one.
        return features

    def recording_features(self, recording: AudioChunk) -> VoiceFeatures:
        """Features of an uploaded target recording, cached by its content."""
        self._check_reference_length(recording, param="target")
        key = "sha256:" + hashlib.sha256(recording.samples.tobytes()).hexdigest()
        return self._cached(key, lambda: extract_voice_features(recording))

    def target_features(
        self, id_or_name: str, caller: Caller, cancellation: Cancellation | None = None
    ) -> VoiceFeatures:
        """Features of a voice named in a request: custom (by id or name, if `caller` sees it) or built-in."""
        custom = self.find(id_or_name, caller)
        if custom is not None:
            return self.features(custom)
        return self.builtin_features(self._registry.resolve(id_or_name, ANY_MODEL), cancellation, tenant=caller.tenant)

    def preload(self) -> None:
        """Load the configured voices' features (and their base voices') so first requests find them cached. An
        entry that cannot be loaded (unknown, its files gone, its base voice no longer installed) is skipped
        with a warning naming the cause: the server still starts, and requests for that voice fail on their own."""
        for id_or_name in self._options.preload:
            voice = self.store.find(id_or_name)
            if voice is None:
                logger.warning("voice_preload names %r, which is not a custom voice; skipped", id_or_name)
                continue
            try:
                self.features(voice)
                self.builtin_features(self._registry.resolve(voice.base_voice, ANY_MODEL))
            except Exception as exc:
                logger.warning(
                    "voice_preload: voice %r (%s) could not be loaded; skipped: %s", voice.name, voice.id, exc
                )

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
        low, high = self._options.reference_min_s, self._options.reference_max_s
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

    def _new_cancellation(self) -> Cancellation:
        return Cancellation.after(self._options.request_timeout_s)

    def _base_voice(
        self, requested: str | None, features: VoiceFeatures, cancellation: Cancellation, tenant: str
    ) -> VoiceInfo:
        chosen = requested or self._options.custom_voice_base
        if chosen:
            return self._registry.resolve(chosen, ANY_MODEL)
        engine = self._registry.default_voice.engine
        candidates = [voice for voice in self._registry.voices() if voice.engine == engine]
        return min(
            candidates,
            key=lambda voice: abs(
                self.builtin_features(voice, cancellation, tenant=tenant).log_f0_mean - features.log_f0_mean
            ),
        )

    def _profile(
        self, key: str, profile: Future[VoiceFeatures], voice: VoiceInfo, cancellation: Cancellation, tenant: str
    ) -> VoiceFeatures:
        """Lead the one profile of `voice`: its result goes to the cache and to whoever waits on `profile`."""
        try:
            features = extract_voice_features(self._speak_profile(voice, cancellation, tenant))
            self._cache.put(key, features)
            profile.set_result(features)
            return features
        except BaseException as exc:
            profile.set_exception(exc)
            raise
        finally:
            with self._profiles_lock:
                del self._profiles[key]

    def _speak_profile(self, voice: VoiceInfo, cancellation: Cancellation, tenant: str) -> AudioChunk:
        """`PROFILE_TEXT` in `voice`, through the scheduler as `tenant`'s work."""
        audio = speak_through_scheduler(
            self._scheduler, self._registry.engine(voice), voice, [PROFILE_TEXT],
            max_segment_chars=self._options.max_segment_chars, cancellation=cancellation, tenant=tenant,
            purpose="profile",
        )  # fmt: skip
        return AudioChunk(audio, voice.sample_rate)


def _custom_key(voice: CustomVoice) -> str:
    return f"custom:{voice.id}"
