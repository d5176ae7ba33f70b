"""Speech the server makes for itself (a voice's profile, its loudness calibration), made like a request's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxserve.conversion.cancellation import Cancellation
from voxserve.engines.base import Engine
from voxserve.frontend.segment import segment_text
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.pool import Priority, Scheduler
from voxserve.types import SynthesisParams, VoiceInfo


def speak_through_scheduler(
    scheduler: Scheduler, engine: Engine, voice: VoiceInfo, texts: Sequence[str], *, max_segment_chars: int,
    cancellation: Cancellation, tenant: str, purpose: str, noise: float | None = None,
) -> np.ndarray:  # fmt: skip
    """`texts` in `voice`, segment by segment through the scheduler, joined: admitted like a request (429 when the
    queue is full), behind speech that plays sooner, dropped unrun past the cancellation's deadline, and withdrawn
    when it is cancelled. Blocking. `noise` sets both noise scales (`None`: the voice's own)."""
    pieces = [
        piece
        for text in texts
        for piece in segment_text(text, first_segment_max_chars=max_segment_chars, max_segment_chars=max_segment_chars)
    ]
    trace = RequestTrace(f"{purpose}-{voice.id}", enabled=False)
    deadline = cancellation.deadline
    segments = [
        engine.prepare(SynthesisParams(text=piece, voice=voice, noise_scale=noise, noise_w=noise)) for piece in pieces
    ]
    with scheduler.admit(len(segments)) as reservation:  # closing it withdraws whatever is still queued
        futures = [
            scheduler.submit(
                engine, segment, trace, priority=Priority.LATER_SEGMENT, due=deadline, deadline=deadline,
                tenant=tenant, reservation=reservation,
            )
            for segment in segments
        ]  # fmt: skip
        return np.concatenate([cancellation.wait(future).samples for future in futures])
