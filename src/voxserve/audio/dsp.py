"""Sample-level processing that must work chunk by chunk, so streamed and buffered audio come out identical."""

from __future__ import annotations

import numpy as np
import soxr

PCM16_SCALE = 32767.0


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float32 in [-1, 1] to little-endian signed 16-bit PCM bytes."""
    return (np.clip(samples, -1.0, 1.0) * PCM16_SCALE).astype("<i2").tobytes()


class SegmentJoiner:
    """Joins consecutive segments with a short linear crossfade so sentence boundaries do not click.

    The last `crossfade_samples` of each segment are held back until the next segment (or `flush`) arrives.
    `last_start` is where the segment pushed last begins in the joined audio (overlapping the one before it).
    """

    def __init__(self, crossfade_samples: int) -> None:
        self._overlap = crossfade_samples
        self._tail = np.zeros(0, dtype=np.float32)
        self._emitted = 0
        self.last_start = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add one segment; return the audio that is final now."""
        samples = samples.astype(np.float32, copy=False)
        held = len(self._tail)
        if held and len(samples) >= held:
            self.last_start = self._emitted
            fade_in = np.linspace(0.0, 1.0, held, endpoint=False, dtype=np.float32)
            head = self._tail * (1.0 - fade_in) + samples[:held] * fade_in
            samples = np.concatenate([head, samples[held:]])
        else:
            self.last_start = self._emitted + held
            samples = np.concatenate([self._tail, samples])
        cut = max(0, len(samples) - self._overlap)
        ready, self._tail = samples[:cut], samples[cut:]
        self._emitted += len(ready)
        return ready

    def extend(self, samples: np.ndarray) -> np.ndarray:
        """Continue the segment pushed last with its next window (no crossfade); return the audio final now."""
        samples = np.concatenate([self._tail, samples.astype(np.float32, copy=False)])
        cut = max(0, len(samples) - self._overlap)
        ready, self._tail = samples[:cut], samples[cut:]
        self._emitted += len(ready)
        return ready

    def flush(self) -> np.ndarray:
        tail, self._tail = self._tail, np.zeros(0, dtype=np.float32)
        self._emitted += len(tail)
        return tail


class StreamResampler:
    """Resamples a chunked stream without seams (soxr keeps filter state across chunks)."""

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        self.out_rate_hz = out_rate_hz
        self._stream = None if in_rate_hz == out_rate_hz else soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, "float32")

    def push(self, samples: np.ndarray, *, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples.astype(np.float32, copy=False), last=last)
