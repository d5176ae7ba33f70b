"""Even loudness across voices: one gain per voice, measured once, and a peak limiter on every response.

A voice's gain takes its calibration speech (`CALIBRATION_TEXTS`, spoken by the voice, converted for a custom voice)
to the target integrated loudness (BS.1770). The gain is per voice, not per sentence or request, so a stream never
pumps between sentences and a voice sounds the same in every response. The limiter then holds every sample under
the peak ceiling, whatever the gain or the conversion did."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

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
# hang on one peaky sentence (single paragraphs put the corpus anywhere from -17.3 to -18.6 LUFS; these three
# together put it at -17.7 for the bundled voice).
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
        self, options: LoudnessOptions, scheduler: Scheduler, *, cache_size: int = 1024, calibrations: int = 16
    ) -> None:
        self.options = options
        self._scheduler = scheduler
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
                audio = self._calibrations.get(key)
                if audio is None:
                    # A sentence at a time, each admitted on its own: a server with a small queue (fewer places
                    # than the calibration has sentences) can still measure its voices.
                    audio = np.concatenate([
                        speak_through_scheduler(
                            self._scheduler, engine, voice, [sentence], max_segment_chars=len(sentence),
                            cancellation=cancellation, tenant=tenant, purpose="loudness", noise=0.0,
                        )
                        for sentence in CALIBRATION_SENTENCES
                    ])  # fmt: skip
                    if custom is not None:
                        audio = custom[1].apply(audio, voice.sample_rate)
                    self._calibrations.put(key, audio)
                gain = self._gain_to(audio, voice.sample_rate, target)
                self._gains.put((key, target), gain)
            return gain
        finally:
            lock.release()

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
