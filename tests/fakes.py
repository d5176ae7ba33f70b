"""`FakeEngine`: an exact, instant engine for scheduler and service tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from voxserve.engines.base import PreparedSegment
from voxserve.types import SynthesisParams, VoiceInfo

FAKE_VOICE = VoiceInfo("fake", "fake", "en", 1000, "fake")


class FakeEngine:
    """Returns one sample per character of the segment text, valued by the text's length; records the order it
    ran segments in; it can be held at a gate to build up a queue, or slowed by `delay_s` per segment."""

    name = "fake"
    supports_batching = False
    supports_instructions = False

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.ran: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def voices(self) -> list[VoiceInfo]:
        return [FAKE_VOICE]

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        return PreparedSegment(params)

    def run(self, batch: Sequence[PreparedSegment]) -> list[np.ndarray]:
        self.started.set()
        self.gate.wait(timeout=10)
        time.sleep(self.delay_s)
        outputs = []
        for segment in batch:
            if segment.params.text == "fail":
                raise RuntimeError("boom")
            self.ran.append(segment.params.text)
            outputs.append(np.full(len(segment.params.text), len(segment.params.text) / 100, dtype=np.float32))
        return outputs

    def warmup(self) -> None:
        pass
