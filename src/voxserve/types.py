"""Leaf data types shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Speech runs at roughly 15 characters per second; used to estimate audio before it exists (playback order,
# pending audio in the queue), never to measure it.
SPOKEN_S_PER_CHAR = 0.065


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mono float32 audio in [-1, 1] at `sample_rate`; audio stays in this form until it is encoded."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """A voice a client can name: `id` is what goes in the request's `voice` field."""

    id: str
    engine: str
    language: str
    sample_rate: int
    name: str
    speakers: tuple[str, ...] = ()
    supports_instructions: bool = False


@dataclass(frozen=True, slots=True)
class SynthesisParams:
    """What to say and how, resolved to a concrete voice. `None` scales mean "the voice's default"."""

    text: str
    voice: VoiceInfo
    speed: float = 1.0
    noise_scale: float | None = None
    noise_w: float | None = None
    instructions: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    timestamps: bool = False  # prepare the segment's words too, to time them in its audio

    @property
    def estimated_audio_s(self) -> float:
        return len(self.text) * SPOKEN_S_PER_CHAR / self.speed


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request acts for: an API key's id (`None` on a server without keys) and whether it is an admin.
    What a caller owns (custom voices, jobs) only it sees, unless it is shared."""

    key_id: str | None = None
    admin: bool = True

    @property
    def tenant(self) -> str:
        """The name fair sharing knows this caller by; every caller of a server without keys is one tenant."""
        return self.key_id or ""

    def sees(self, owner: str | None, shared: bool) -> bool:
        """Things made before keys existed (no owner) stay visible to every key."""
        return self.admin or shared or owner is None or owner == self.key_id

    def manages(self, owner: str | None) -> bool:
        """Changing or deleting is for the owner and admins; sharing a thing lends it, not its ownership."""
        return self.admin or (owner is not None and owner == self.key_id)
