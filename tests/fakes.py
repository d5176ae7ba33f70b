"""`FakeEngine`: an exact, instant engine for scheduler and service tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from voxserve.engines.base import EngineProfile, PreparedSegment, SegmentAudio
from voxserve.types import SynthesisParams, VoiceInfo

FAKE_VOICE = VoiceInfo("fake", "fake", "en", 1000, "fake")
# A server around fake engines: the fake voice only, no audio cache, and no loudness calibration (it would run the
# calibration texts on the engine, which these tests hold and count the calls of).
FAKE_SERVER: dict[str, object] = {
    "default_voice": FAKE_VOICE.id, "espeak_voices": False, "audio_cache_bytes": 0, "loudness_normalization": False,
}  # fmt: skip


class FakeEngine:
    """Returns one sample per character of the segment text, valued by the text's length. It records what it ran
    (texts, batches, solo flags); it can be held at a gate to build up a queue, or slowed by `delay_s` per call.
    `failure` (while set) is raised by every call; `on_prepare` and `on_run` see each segment as it is prepared
    and each batch's texts as a call starts, before the gate (to hold one phase of one request at a time)."""

    name = "fake"
    supports_instructions = False
    supports_timestamps = False

    def __init__(self, delay_s: float = 0.0, supports_batching: bool = False, windows: int = 1) -> None:
        self.delay_s = delay_s
        self.supports_batching = supports_batching
        self.windows = windows  # a windowed segment comes in this many pieces, each run recorded as `text#n`
        self.supports_windows = windows > 1
        self.ran: list[str] = []
        self.batches: list[list[str]] = []
        self.solo: list[bool] = []
        self.windowed: list[bool] = []  # what each call was asked for
        self.memory_releases = 0
        self.solo_by_text: dict[str, bool] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.failure: Exception | None = None
        self.on_prepare: Callable[[SynthesisParams], None] | None = None
        self.on_run: Callable[[list[str]], None] | None = None

    def voices(self) -> list[VoiceInfo]:
        return [FAKE_VOICE]

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        if self.on_prepare is not None:
            self.on_prepare(params)
        return PreparedSegment(params)

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        texts = [segment.params.text for segment in batch]
        self.windowed.append(windowed)
        self._call(texts, solo)
        audio = [np.full(len(text), len(text) / 100, dtype=np.float32) for text in texts]
        if windowed and self.supports_windows:
            pieces = np.array_split(audio[0], self.windows)
            rest = FakeWindows(self, texts[0], pieces[1:], len(pieces[0]) / FAKE_VOICE.sample_rate)
            return [SegmentAudio(pieces[0], segment_samples=len(audio[0]), rest=rest)]
        return [SegmentAudio(samples) for samples in audio]

    def hold(self, text: str) -> tuple[threading.Event, threading.Event]:
        """Make the call that runs `text` (a window's `text#n` too) wait. Returns the events "it is running" and
        "let it finish"."""
        running, release = threading.Event(), threading.Event()

        def held(texts: list[str]) -> None:
            if texts == [text]:
                running.set()
                release.wait(10)

        self.on_run = held
        return running, release

    def _call(self, texts: list[str], solo: bool) -> None:
        if self.on_run is not None:
            self.on_run(texts)
        self.started.set()
        self.gate.wait(timeout=10)
        time.sleep(self.delay_s)
        if self.failure is not None:
            raise self.failure
        if "fail" in texts:
            raise RuntimeError("boom")
        self.ran += texts
        self.batches.append(texts)
        self.solo.append(solo)
        self.solo_by_text.update(dict.fromkeys(texts, solo))

    def warmup(self) -> None:
        pass

    def runtime_info(self) -> dict[str, object]:
        return {"runtime": "fake"}

    def start_profiling(self, directory: Path) -> None:
        pass

    def release_memory(self) -> None:
        self.memory_releases += 1

    def stop_profiling(self) -> list[EngineProfile]:
        return []


class FakeWindows:
    """The windows of a fake segment after its first, each run like an engine call recorded as `text#n`."""

    def __init__(self, engine: FakeEngine, text: str, pieces: list[np.ndarray], offset_s: float) -> None:
        self._engine = engine
        self._text = text
        self._pieces = pieces
        self._done = 1
        self.offset_s = offset_s

    @property
    def remaining_s(self) -> float:
        return sum(len(piece) for piece in self._pieces) / FAKE_VOICE.sample_rate

    def run(self, *, solo: bool = False) -> SegmentAudio:
        self._engine._call([f"{self._text}#{self._done}"], solo)
        piece = self._pieces.pop(0)
        self._done += 1
        self.offset_s += len(piece) / FAKE_VOICE.sample_rate
        return SegmentAudio(piece, rest=self if self._pieces else None)


TONE_VOICE = VoiceInfo("tone", "fake", "en", 16_000, "tone")


def tone(chars: int) -> np.ndarray:
    """10 ms per character of a quiet 220 Hz tone with a loud 30 ms burst every quarter second: peaky, as speech
    is, so loudness and the limiter have something to measure."""
    t = np.arange(chars * 160) / TONE_VOICE.sample_rate
    level = np.where(t % 0.25 < 0.03, 1.2, 0.1)
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


class ToneEngine(FakeEngine):
    """A `FakeEngine` (recording calls, held at its gate) whose voice `tone` speaks each segment as `tone`."""

    def voices(self) -> list[VoiceInfo]:
        return [TONE_VOICE]

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        super().run(batch, solo=solo)
        return [SegmentAudio(tone(len(segment.params.text))) for segment in batch]
