"""A buzzing test engine and the helpers the voice library and conversion tests share."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

import numpy as np

from voxserve.conversion.cancellation import Cancellation
from voxserve.engines.base import PreparedSegment, SegmentAudio
from voxserve.frontend.segment import segment_text
from voxserve.obs.metrics import Metrics
from voxserve.service.voice_library import PROFILE_TEXT
from voxserve.settings import Settings, load_settings
from voxserve.types import AudioChunk, SynthesisParams, VoiceInfo

T = TypeVar("T")
RATE = 16_000
WAIT_S = 10
LOW = VoiceInfo("buzz-low", "buzz", "en", RATE, "low")
HIGH = VoiceInfo("buzz-high", "buzz", "en", RATE, "high")
PITCH_HZ = {LOW.id: 110.0, HIGH.id: 220.0}


def buzz(f0_hz: float, seconds: float) -> AudioChunk:
    """A vowel-like sound: a pulse train at `f0_hz` through one resonance (WORLD finds its pitch)."""
    t = np.arange(int(seconds * RATE)) / RATE
    pulses = np.zeros_like(t)
    pulses[(np.arange(0, seconds, 1 / f0_hz) * RATE).astype(int)] = 1.0
    kernel_t = np.arange(400) / RATE
    kernel = np.exp(-kernel_t * 300) * np.sin(2 * np.pi * 700.0 * kernel_t)
    signal = np.convolve(pulses, kernel)[: len(t)]
    return AudioChunk((0.3 * signal / np.abs(signal).max()).astype(np.float32), RATE)


class BuzzEngine:
    """Speaks half a second of buzz per segment at its voice's pitch. Records what it ran and on which thread;
    closing `gate` holds every call (`started` tells one is waiting there)."""

    name = "buzz"
    supports_batching = False
    supports_windows = False
    supports_instructions = False
    supports_timestamps = False

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def voices(self) -> list[VoiceInfo]:
        return [LOW, HIGH]

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        return PreparedSegment(params)

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        self.started.set()
        self.gate.wait(timeout=WAIT_S)
        self.threads.add(threading.current_thread().name)
        self.ran += [segment.params.text for segment in batch]
        return [SegmentAudio(buzz(PITCH_HZ[segment.params.voice.id], 0.5).samples) for segment in batch]

    def warmup(self) -> None:
        pass


class WatchedCancellation(Cancellation):
    """Says when its owner starts waiting for someone else's result."""

    def __init__(self, deadline: float) -> None:
        super().__init__(deadline)
        self.waiting = threading.Event()

    def wait(self, future: Future[T]) -> T:
        self.waiting.set()
        return super().wait(future)


def library_settings(data_dir: Path, **flags: object) -> Settings:
    return load_settings(default_voice=LOW.id, espeak_voices=False, reference_min_s=1.0, data_dir=data_dir, **flags)


def profile_texts(settings: Settings) -> list[str]:
    limit = settings.max_segment_chars
    return segment_text(PROFILE_TEXT, first_segment_max_chars=limit, max_segment_chars=limit)


def engine_items(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("voxserve_engine_items_total", {"engine": "buzz"}) or 0.0
