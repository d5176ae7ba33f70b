"""`WindowedConversion`: converts audio as it arrives, window by window, without seams.

Each window is converted together with the last `overlap` samples of the window before it (context for F0
tracking and the envelope); the two conversions of that shared stretch are crossfaded, and only audio that no
later window will touch is released."""

from __future__ import annotations

import numpy as np

from voxserve.conversion.base import ConversionPlan


class WindowedConversion:
    def __init__(self, plan: ConversionPlan, sample_rate: int, *, overlap_s: float, min_window_s: float = 0.0) -> None:
        """Input is buffered until `min_window_s` of new audio is there (longer windows mean fewer seams), then
        converted with `overlap_s` of context."""
        self._plan = plan
        self._sample_rate = sample_rate
        overlap = self._overlap = max(1, round(overlap_s * sample_rate))
        self._min_window = max(round(min_window_s * sample_rate), 2 * overlap)
        self._context = np.zeros(0, dtype=np.float32)
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._held = np.zeros(0, dtype=np.float32)
        self._fade_in = np.linspace(0.0, 1.0, overlap, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Converted audio ready for release (possibly empty)."""
        self._pending.append(samples.astype(np.float32, copy=False))
        self._pending_len += len(samples)
        if self._pending_len < self._min_window:
            return np.zeros(0, dtype=np.float32)
        return self._run(final=False)

    def flush(self) -> np.ndarray:
        """Everything left, converted; the conversion is finished."""
        return self._run(final=True) if self._pending_len else self._release_held()

    def _run(self, *, final: bool) -> np.ndarray:
        fresh = np.concatenate(self._pending)
        self._pending, self._pending_len = [], 0
        window = np.concatenate([self._context, fresh])
        converted = self._plan.apply(window, self._sample_rate)
        shared = len(self._context)
        head = self._crossfade(self._held, converted[:shared])
        if final:
            self._held = np.zeros(0, dtype=np.float32)
            return np.concatenate([head, converted[shared:]])
        keep = min(self._overlap, len(fresh))
        self._context = window[len(window) - keep :]
        self._held = converted[len(converted) - keep :]
        return np.concatenate([head, converted[shared : len(converted) - keep]])

    def _crossfade(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        fade_in = self._fade_in if len(after) == self._overlap else np.linspace(0, 1, len(after), dtype=np.float32)
        return before * (1 - fade_in) + after * fade_in

    def _release_held(self) -> np.ndarray:
        held, self._held = self._held, np.zeros(0, dtype=np.float32)
        return held
