"""A VITS segment's flow and HiFi-GAN decoder run on windows of its frames. Both are convolutional along the
frames with a finite receptive field, so a window run with enough frames of context on each side gives the samples
of running the whole segment (measured on the bundled voice: the flow's four coupling layers reach 32 frames, and
24 frames of context leave a relative error of 8e-7; the decoder's 12 frames, 2e-6). A short first window makes a
segment's first audio cost its text stage plus one small decode, and the rest follows window by window."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from voxserve.engines.base import Alignment, SegmentAudio

FLOW_CONTEXT_FRAMES = 32  # the flow's whole receptive field: its windows are exact
DECODER_CONTEXT_FRAMES = 16  # past the decoder's measured receptive field, with room to spare

# A stage on arrays of either backend (numpy for onnxruntime, torch tensors): its framed input first, then its side
# inputs; framed along the last axis.
Graph = Callable[[Sequence[Any]], Any]


@dataclass(frozen=True, slots=True)
class WindowOptions:
    """How a windowed segment is decoded: its first window (`first_frames`; a frame is 256 samples, 11.6 ms at
    22,050 Hz), each next `growth` times the one before, up to `longest_frames`. Each window costs its context
    again (`piper_decoder`), so few windows beyond the first make the most audio per second."""

    first_frames: int = 16
    longest_frames: int = 512
    growth: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.first_frames <= self.longest_frames or self.growth < 1:
            raise ValueError("windows need 1 <= first_frames <= longest_frames and growth >= 1")


def window_bounds(frames: int, first: int, longest: int, growth: int = 2) -> list[tuple[int, int]]:
    """Windows over `frames` frames: the first `first` long, each next `growth` times the one before, at most
    `longest`; together they cover every frame once, in order. A last window shorter than a quarter of the one
    before it joins that one (its context would cost more than it saves)."""
    bounds: list[tuple[int, int]] = []
    start, size = 0, first
    while start < frames:
        end = min(frames, start + size)
        if bounds and frames - end < size // 4:
            end = frames
        bounds.append((start, end))
        start, size = end, min(growth * size, longest)
    return bounds


def _window(graph: Graph, framed: Any, sides: Sequence[Any], start: int, end: int, context: int, scale: int) -> Any:
    """`graph` on frames `start:end` of `framed` (and of each side input that is framed too) with `context` frames
    each side, its output cut to the window: `scale` output steps a frame."""
    frames = framed.shape[-1]
    low, high = max(0, start - context), min(frames, end + context)
    given = [side[..., low:high] if side.shape[-1] == frames else side for side in sides]
    out = graph([framed[..., low:high], *given])
    return out[..., (start - low) * scale : (end - low) * scale]


class FramedSynthesis:
    """One segment after its text stage: the prior sample `prior` [1, channels, frames] and the side inputs of the
    flow and the decoder, turned into audio one decoder window (`bounds`) at a time by `next_window`.

    Each window runs the flow over the frames its decode reaches that the flow has not made yet, with the flow's
    whole receptive field of context: no window waits for the flow of the whole segment, and windowing costs
    64 frames more flow a window and nothing of exactness."""

    def __init__(
        self, prior: Any, flow_sides: Sequence[Any], decoder_sides: Sequence[Any], bounds: list[tuple[int, int]],
        hop: int,
    ) -> None:  # fmt: skip
        self._prior = prior
        self._flow_sides = flow_sides
        self._decoder_sides = decoder_sides
        self.bounds = bounds
        self.hop = hop
        self._latent = prior * 0  # a buffer of the prior's kind (numpy or torch), filled as the flow runs
        self._latent_frames = 0  # frames of the latent the flow has made so far
        self.done = 0  # windows decoded

    @property
    def frames(self) -> int:
        return self._prior.shape[-1]

    def next_window(self, flow: Graph, decoder: Graph) -> Any:
        """The next window's samples (`hop` a frame), flat."""
        start, end = self.bounds[self.done]
        reach = min(self.frames, end + DECODER_CONTEXT_FRAMES)
        if reach > self._latent_frames:
            self._latent[..., self._latent_frames : reach] = _window(
                flow, self._prior, self._flow_sides, self._latent_frames, reach, FLOW_CONTEXT_FRAMES, 1
            )
            self._latent_frames = reach
        audio = _window(decoder, self._latent, self._decoder_sides, start, end, DECODER_CONTEXT_FRAMES, self.hop)
        self.done += 1
        return audio.reshape(-1)


Decode = Callable[[FramedSynthesis, bool], np.ndarray]  # the next window of a segment, solo or not


class SegmentWindows:
    """The windows of one segment after its first: the `Continuation` a scheduler job runs one window at a time."""

    def __init__(self, framed: FramedSynthesis, sample_rate: int, decode: Decode) -> None:
        self._framed = framed
        self._sample_rate = sample_rate
        self._decode = decode

    @classmethod
    def first(
        cls, framed: FramedSynthesis, sample_rate: int, decode: Decode, *, solo: bool, alignment: Alignment | None
    ) -> SegmentAudio:
        """The segment's first window, carrying its whole alignment and length, and the rest to continue."""
        first = cls(framed, sample_rate, decode).run(solo=solo)
        return replace(first, alignment=alignment, segment_samples=framed.frames * framed.hop)

    @property
    def offset_s(self) -> float:
        framed = self._framed
        return framed.bounds[framed.done][0] * framed.hop / self._sample_rate

    @property
    def remaining_s(self) -> float:
        framed = self._framed
        return (framed.frames - framed.bounds[framed.done][0]) * framed.hop / self._sample_rate

    def run(self, *, solo: bool = False) -> SegmentAudio:
        samples = np.ascontiguousarray(self._decode(self._framed, solo), dtype=np.float32)
        return SegmentAudio(samples, rest=self if self._framed.done < len(self._framed.bounds) else None)
