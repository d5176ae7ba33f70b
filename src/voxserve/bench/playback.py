"""What a listener hears from a streamed response: a player that starts at the first audio and plays in real time
stalls whenever the audio it has runs out before more arrives."""

from __future__ import annotations

from collections.abc import Callable, Sequence

STALL_EPSILON_S = 0.001  # a wait this short is the clock's grain, not a gap anyone hears


def playback_stalls(arrivals: Sequence[tuple[float, int]], audio_at: Callable[[int], float]) -> tuple[int, float]:
    """`arrivals` are (seconds, bytes received so far) per piece of the body; `audio_at` says how many seconds of
    audio a byte count holds. Returns how many times the player ran dry, and how long it waited in all."""
    received = [(when, audio_at(count)) for when, count in arrivals]
    first = next((index for index, (_, audio_s) in enumerate(received) if audio_s > 0), None)
    if first is None:
        return 0, 0.0
    clock, available = received[first]
    position = 0.0  # seconds of audio played by `clock`
    stalls, waited = 0, 0.0
    for when, audio_s in received[first + 1 :]:
        runs_dry = clock + (available - position)
        if when - runs_dry > STALL_EPSILON_S:
            stalls += 1
            waited += when - runs_dry
            position = available
        else:
            position += when - clock
        clock, available = when, max(available, audio_s)
    return stalls, waited
