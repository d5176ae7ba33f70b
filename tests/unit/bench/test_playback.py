from __future__ import annotations

import itertools

import numpy as np
import pytest

from voxserve.audio.decode import audio_by_bytes
from voxserve.audio.encode import create_encoder
from voxserve.bench.playback import playback_stalls

SECOND_OF_PCM = 48_000  # 24 kHz, 16-bit


def pcm(count: int) -> float:
    return count // 2 / 24_000


def test_a_player_fed_faster_than_real_time_never_stalls() -> None:
    arrivals = [(0.1, SECOND_OF_PCM), (0.6, 2 * SECOND_OF_PCM), (1.5, 3 * SECOND_OF_PCM)]
    assert playback_stalls(arrivals, pcm) == (0, 0.0)
    assert playback_stalls([(0.1, SECOND_OF_PCM)], pcm) == (0, 0.0)
    assert playback_stalls([], pcm) == (0, 0.0)


def test_each_time_the_audio_runs_out_is_a_stall_as_long_as_the_wait() -> None:
    # 1 s of audio at 0.1 s plays out at 1.1 s; the next second comes at 1.6 s (0.5 s late) and plays out at 2.6 s;
    # the last comes at 2.7 s (0.1 s late).
    arrivals = [(0.1, SECOND_OF_PCM), (1.6, 2 * SECOND_OF_PCM), (2.7, 3 * SECOND_OF_PCM)]
    stalls, waited = playback_stalls(arrivals, pcm)
    assert stalls == 2
    assert waited == pytest.approx(0.6)


def test_bytes_before_the_first_audio_start_nothing() -> None:
    arrivals = [(0.05, 44), (0.3, 44 + SECOND_OF_PCM), (1.2, 44 + 2 * SECOND_OF_PCM)]
    assert playback_stalls(arrivals, lambda count: max(count - 44, 0) // 2 / 24_000) == (0, 0.0)


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav"])
def test_a_streamed_body_holds_more_audio_the_more_of_it_has_arrived(response_format: str) -> None:
    encoder = create_encoder(response_format, 22_050)
    signal = (0.3 * np.sin(np.arange(22_050 * 3) / 10)).astype(np.float32)
    data = b"".join(encoder.encode(signal[start : start + 22_050]) for start in range(0, len(signal), 22_050))
    data += encoder.flush()
    encoder.close()
    audio_at = audio_by_bytes(data, "")
    heard = [audio_at(count) for count in range(0, len(data) + 1, max(len(data) // 50, 1))]
    assert heard[0] == 0.0
    assert all(later >= earlier for earlier, later in itertools.pairwise(heard))
    assert 0.5 < audio_at(len(data) // 2) < 2.5
    assert audio_at(len(data)) == pytest.approx(3.0, abs=0.1)


def test_raw_pcm_is_counted_by_samples() -> None:
    audio_at = audio_by_bytes(b"\x00" * SECOND_OF_PCM, "audio/pcm")
    assert audio_at(SECOND_OF_PCM // 2) == 0.5
    assert audio_at(SECOND_OF_PCM + 1) == 1.0
