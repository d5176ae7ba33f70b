"""The `Engine` protocol: what the scheduler runs and the service prepares input for."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from voxserve.frontend.alignment import WordSpan
from voxserve.types import SynthesisParams, VoiceInfo


@dataclass(frozen=True, slots=True)
class PreparedSegment:
    """One segment ready for the model: its parameters (the segment's text and the voice) and, for engines
    that take them, its phonemes and phoneme ids, with the character of `phonemes` each id stands for (-1 for
    markers and padding). For a segment prepared with `timestamps`, its words and the phonemes each speaks."""

    params: SynthesisParams
    phonemes: str = ""
    phoneme_ids: tuple[int, ...] = ()
    id_sources: tuple[int, ...] = ()
    words: tuple[WordSpan, ...] = ()

    @property
    def call_key(self) -> tuple[object, ...]:
        """Segments of one engine with equal keys may share a model call: same voice and synthesis scales."""
        params = self.params
        return params.voice.id, params.speed, params.noise_scale, params.noise_w


@dataclass(frozen=True, slots=True)
class Alignment:
    """Where a segment's sounds are in its audio: its phoneme string, the samples where each character's sound
    starts and ends (`starts`, `ends`; the characters of one sound share them), and its words, each a span of
    the segment's text and of `phonemes`."""

    phonemes: str
    starts: np.ndarray
    ends: np.ndarray
    words: tuple[WordSpan, ...]


class Continuation(Protocol):
    """The rest of a segment whose first window an engine decoded (`Engine.run` with `windowed`): the scheduler
    queues it as a job of its own, which runs `run` for one more window at a time."""

    @property
    def offset_s(self) -> float:
        """Where the next window starts in the segment's audio (when a listener reaches it)."""
        ...

    @property
    def remaining_s(self) -> float:
        """The segment's audio still to come."""
        ...

    def run(self, *, solo: bool = False) -> SegmentAudio:
        """The next window's audio; its `rest` is this continuation again while windows remain."""
        ...


@dataclass(frozen=True, slots=True)
class SegmentAudio:
    """One segment's audio, or its first window's (then the rest follows window by window): float32 mono at the
    voice's sample rate, and for a segment prepared with `timestamps` on an engine that supports them, its
    alignment (what word and phoneme timestamps are made of; for the whole segment, on its first window).

    `segment_samples` is the whole segment's length when `samples` holds only its first window. `rest` (from the
    engine) is what remains to decode; the scheduler queues it and hands the request `more`, the next window's
    audio to come."""

    samples: np.ndarray
    alignment: Alignment | None = None
    segment_samples: int = 0
    rest: Continuation | None = None
    more: Future[SegmentAudio] | None = None

    @property
    def segment_length(self) -> int:
        """Samples of the whole segment."""
        return self.segment_samples or len(self.samples)


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """A profile an engine's runtime wrote: Chrome trace events with `ts` in microseconds from `start_ns`
    (on the `time.monotonic_ns` clock)."""

    path: Path
    start_ns: int


class Engine(Protocol):
    """A speech engine. Synchronous and free of I/O: the scheduler calls `run` from its worker threads."""

    name: str
    supports_batching: bool
    supports_windows: bool  # `run` decodes a `windowed` segment's first window and returns the rest to continue
    supports_instructions: bool
    supports_timestamps: bool  # `run` aligns segments prepared with `timestamps`

    def voices(self) -> Sequence[VoiceInfo]:
        """Every voice this engine can speak."""
        ...

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        """Turn one segment's text into model input (phonemes, ids). Cheap; runs outside the workers."""
        ...

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        """Synthesize a batch: one `SegmentAudio` per item, in order.
        `solo` says nothing else is running, so the call may use every core. `windowed` asks an engine that
        `supports_windows` for a lone segment's first window now and a `rest` to continue (others ignore it)."""
        ...

    def warmup(self) -> None:
        """Run each model once so the first request does not pay for lazy initialization."""
        ...

    def runtime_info(self) -> dict[str, object]:
        """How the engine runs (execution providers, threads, models), for diagnostics."""
        ...

    def start_profiling(self, directory: Path) -> None:
        """Have the runtime profile every call from now on, writing into `directory`. Engines whose runtime
        has no profiler do nothing."""
        ...

    def stop_profiling(self) -> list[EngineProfile]:
        """Stop profiling; the profiles written since `start_profiling` (none for engines without one)."""
        ...

    def release_memory(self) -> None:
        """Give back memory the runtime keeps for reuse (allocator arenas, cached device blocks). The scheduler
        calls it once the engine has been idle a while, so memory returns to its resting size after a burst."""
        ...
