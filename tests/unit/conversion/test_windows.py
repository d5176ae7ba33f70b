"""Windowed conversion releases every sample exactly once, in order, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest

from voxserve.conversion.windows import WindowedConversion


class Gain:
    """A stand-in plan with no state across windows: the crossfaded output must equal the one-shot output."""

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return samples * np.float32(0.5)


@pytest.mark.parametrize("chunk", [1_000, 4_000, 16_000, 100_000])
@pytest.mark.parametrize("min_window_s", [0.0, 0.5])
def test_output_matches_input_length_and_content(chunk: int, min_window_s: float) -> None:
    rate = 16_000
    signal = np.random.default_rng(0).standard_normal(50_000).astype(np.float32)
    windows = WindowedConversion(Gain(), rate, overlap_s=0.05, min_window_s=min_window_s)
    pieces = [windows.push(signal[start : start + chunk]) for start in range(0, len(signal), chunk)]
    pieces.append(windows.flush())
    output = np.concatenate(pieces)
    assert len(output) == len(signal)
    np.testing.assert_allclose(output, signal * 0.5, atol=1e-6)


def test_short_pushes_wait_for_a_whole_window() -> None:
    windows = WindowedConversion(Gain(), 16_000, overlap_s=0.05, min_window_s=1.0)
    assert len(windows.push(np.ones(8_000, dtype=np.float32))) == 0
    released = windows.push(np.ones(8_000, dtype=np.float32))
    assert len(released) == 16_000 - 800
    assert len(windows.flush()) == 800
