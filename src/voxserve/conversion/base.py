"""The interface every conversion method implements, so a neural converter can sit beside WORLD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voxserve.conversion.features import VoiceFeatures


@dataclass(frozen=True, slots=True)
class ConversionOptions:
    pitch_shift: float = 0.0
    """Semitones added after the pitch is mapped onto the target's."""
    formant_shift: float = 1.0
    """Scales the vocal-tract warp toward the target (above 1 moves formants up further)."""


class ConversionPlan(Protocol):
    """How to move one source voice toward one target; applied window by window to the source's audio."""

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Converted audio with as many samples as `samples`, at the same rate."""
        ...


class Converter(Protocol):
    name: str

    def plan(self, source: VoiceFeatures, target: VoiceFeatures, options: ConversionOptions) -> ConversionPlan: ...
