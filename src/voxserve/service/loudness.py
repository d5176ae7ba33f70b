"""Even loudness across voices: one gain per voice, measured once, and a peak limiter on every response.

A voice's gain takes its calibration speech (`CALIBRATION_TEXTS`, spoken by the voice, converted for a custom voice)
to the target integrated loudness (BS.1770). The gain is per voice, not per sentence or request, so a stream never
pumps between sentences and a voice sounds the same in every response. The limiter then holds every sample under
the peak ceiling, whatever the gain or the conversion did."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from voxserve.audio.loudness import SILENT_LUFS, PeakLimiter, db_to_gain, integrated_lufs
from voxserve.cache.lru import LruCache
from voxserve.conversion.base import ConversionPlan
from voxserve.conversion.cancellation import Cancellation
from voxserve.engines.base import Engine
from voxserve.errors import DeadlineExceededError
from voxserve.frontend.segment import split_sentences
from voxserve.scheduler.pool import Scheduler
from voxserve.service.rendering import speak_through_scheduler
from voxserve.types import VoiceInfo

# About 30 s of ordinary speech (statements, a question, lists, dialogue): long enough that a voice's gain does not
# hang on one peaky sentence (calibrated on one paragraph alone, the corpus landed further from the target in a
# trial; `benchmarks/quality.py` measures where these three put it).
CALIBRATION_TEXTS = (
    "Good morning. Your order has shipped and should arrive on Friday. If you have any questions about the "
    "delivery, reply to this message and someone from our team will get back to you within a day.",
    "Most of the town was still asleep when the first bus pulled away from the square. A few shopkeepers were "
    "sweeping their doorsteps, and somewhere a radio played quietly. Is this the right stop for the museum? Yes, "
    "two more streets and you are there.",
    "The weather today will be mild, with clouds in the morning and sunshine later in the afternoon. Thank you for "
    "waiting; we will be with you in a moment. He opened the book, read a few lines aloud, and smiled.",
)
CALIBRATION_SENTENCES = [sentence for text in CALIBRATION_TEXTS for sentence in split_sentences(text)]
MAX_GAIN_DB = 24.0  # a voice measured quieter than this below the target is lifted this far, no further
_GAIN_ROUNDS = 4  # each round closes most of what the limiter took: 3 LU -> 0.3 -> 0.03
_GAIN_TOLERANCE_DB = 0.05
_STORED_GAINS = 4096  # gains kept in the store file, oldest dropped first
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoudnessOptions:
    normalize: bool
    target_lufs: float
    peak_ceiling_dbfs: float


class OutputLevel:
    """One response's level stage: its voice's gain, then the limiter. Chunk by chunk, so streamed and buffered
    responses come out identical."""

    def __init__(self, gain: float, sample_rate: int, ceiling: float) -> None:
        self.gain = gain
        self._limiter = PeakLimiter(sample_rate, ceiling)

    def push(self, samples: np.ndarray) -> np.ndarray:
        return self._limiter.push(samples * np.float32(self.gain) if self.gain != 1.0 else samples)

    def flush(self) -> np.ndarray:
        return self._limiter.flush()


class VoiceLoudness:
    """Each voice's gain to a target, found once per (voice, target) on the voice's calibration speech with the
    limiter in the loop: where the gain lifts peaks past the ceiling, the limiter takes some loudness back, and the
    gain is raised until the limited speech measures the target. Built-in voices are keyed by id, custom voices by
    id and recording (a voice registered again is measured again). The calibration speech is made through the
    scheduler as the asking request's work, within its deadline; callers of one voice wait for one measurement.
    It is made without noise, so a voice's gain is the same in every process (a job resumed after a restart
    continues at the level it started at)."""

    def __init__(
        self, options: LoudnessOptions, scheduler: Scheduler, *, store: Path | None = None, cache_size: int = 1024,
        calibrations: int = 16,
    ) -> None:  # fmt: skip
        self.options = options
        self._scheduler = scheduler
        self._store = store
        self._stored = _read_store(store)
        self._gains: LruCache[tuple[str, float], float] = LruCache(cache_size)
        self._calibrations: LruCache[str, np.ndarray] = LruCache(calibrations)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @property
    def ceiling(self) -> float:
        return db_to_gain(self.options.peak_ceiling_dbfs)

    @property
    def server_target(self) -> float | None:
        """The server's target loudness; `None` when normalization is off."""
        return self.options.target_lufs if self.options.normalize else None

    def target(self, requested: float | str | None) -> float | None:
        """The loudness a request asked for (LUFS, or "off": `None`, not normalized), or the server's."""
        if requested is None:
            return self.server_target
        return None if requested == "off" else float(requested)

    def level(self, voice: VoiceInfo, target: float | None, gain_db: Callable[[], float]) -> OutputLevel:
        """The level stage for a response in `voice`: normalized to `target` LUFS by the gain `gain_db` finds, or
        when `target` is `None` at the voice's own level; limited either way."""
        return OutputLevel(db_to_gain(0.0 if target is None else gain_db()), voice.sample_rate, self.ceiling)

    def gain_db(
        self, voice: VoiceInfo, engine: Engine, target: float, *, cancellation: Cancellation, tenant: str = "",
        custom: tuple[str, ConversionPlan] | None = None,
    ) -> float:  # fmt: skip
        """The gain that brings `voice` (converted by `custom`'s plan when given) to `target` LUFS."""
        key = voice.id if custom is None else f"{voice.id}>{custom[0]}"
        lock = self._lock(key)
        if not lock.acquire(timeout=max(cancellation.remaining_s(), 0.0)):
            raise DeadlineExceededError(f"the loudness of voice {voice.id!r} was still being measured at the deadline")
        try:
            gain = self._gains.get((key, target))
            if gain is None:
                speak = partial(self._speak, engine, voice, cancellation=cancellation, tenant=tenant)
                gain = self._measured(voice, key, target, custom, speak)
                self._gains.put((key, target), gain)
            return gain
        finally:
            lock.release()

    def _measured(
        self, voice: VoiceInfo, key: str, target: float, custom: tuple[str, ConversionPlan] | None,
        speak: Callable[[list[str]], np.ndarray],
    ) -> float:  # fmt: skip
        """A built-in voice's gain from the store when its first calibration sentence still sounds the same (the
        same model, byte for byte: a voice whose file changed is measured again); otherwise measured."""
        audio = self._calibrations.get(key)
        stored_key = None
        if audio is None and custom is None and self._store is not None:
            first = speak(CALIBRATION_SENTENCES[:1])
            fingerprint = hashlib.sha256(first.tobytes()).hexdigest()[:16]
            stored_key = f"{voice.engine}:{voice.id}:{fingerprint}:{target}:{self.options.peak_ceiling_dbfs}"
            if stored_key in self._stored:
                return self._stored[stored_key]
            audio = np.concatenate([first, speak(CALIBRATION_SENTENCES[1:])])
        if audio is None:
            audio = speak(CALIBRATION_SENTENCES)
            if custom is not None:
                audio = custom[1].apply(audio, voice.sample_rate)
        self._calibrations.put(key, audio)
        gain = self._gain_to(audio, voice.sample_rate, target)
        if stored_key is not None:
            self._remember(stored_key, gain)
        return gain

    def _speak(
        self, engine: Engine, voice: VoiceInfo, sentences: list[str], *, cancellation: Cancellation, tenant: str
    ) -> np.ndarray:
        # A sentence at a time, each admitted on its own: a server with a small queue (fewer places than the
        # calibration has sentences) can still measure its voices.
        return np.concatenate([
            speak_through_scheduler(
                self._scheduler, engine, voice, [sentence], max_segment_chars=len(sentence),
                cancellation=cancellation, tenant=tenant, purpose="loudness", noise=0.0,
            )
            for sentence in sentences
        ])  # fmt: skip

    def _remember(self, stored_key: str, gain: float) -> None:
        """Add a measured gain to the store file (written whole, then renamed into place: never half written)."""
        assert self._store is not None
        with self._locks_lock:
            self._stored[stored_key] = gain
            while len(self._stored) > _STORED_GAINS:
                del self._stored[next(iter(self._stored))]
            try:
                self._store.parent.mkdir(parents=True, exist_ok=True)
                partial_file = self._store.with_suffix(".tmp")
                partial_file.write_text(json.dumps(self._stored), encoding="utf-8")
                os.replace(partial_file, self._store)
            except OSError:
                logger.warning("could not write the loudness store %s; voices are measured again at restart",
                               self._store, exc_info=True)  # fmt: skip

    def _gain_to(self, audio: np.ndarray, sample_rate: int, target: float) -> float:
        """The gain (dB) that brings `audio`, limited, to `target` LUFS; 0 for silence."""
        lufs = integrated_lufs(audio, sample_rate)
        if lufs <= SILENT_LUFS:
            return 0.0
        gain = target - lufs
        for _ in range(_GAIN_ROUNDS):
            gain = float(np.clip(gain, -MAX_GAIN_DB, MAX_GAIN_DB))
            limiter = PeakLimiter(sample_rate, self.ceiling)
            limited = np.concatenate([limiter.push(audio * np.float32(db_to_gain(gain))), limiter.flush()])
            missing = target - integrated_lufs(limited, sample_rate)
            if abs(missing) < _GAIN_TOLERANCE_DB:
                break
            gain += missing
        return gain

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())


def _read_store(store: Path | None) -> dict[str, float]:
    """The gains measured by earlier runs; none when the file is missing, and none (with a warning) when it is not
    what this module writes."""
    if store is None or not store.is_file():
        return {}
    try:
        stored = json.loads(store.read_text(encoding="utf-8"))
        return {str(key): float(value) for key, value in stored.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        logger.warning("ignoring the unreadable loudness store %s; voices are measured again", store)
        return {}
