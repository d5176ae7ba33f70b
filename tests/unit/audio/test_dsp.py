from __future__ import annotations

import numpy as np

from voxserve.audio.dsp import SegmentJoiner, to_pcm16


def join(segments: list[np.ndarray], overlap: int) -> np.ndarray:
    joiner = SegmentJoiner(overlap)
    return np.concatenate([*(joiner.push(segment) for segment in segments), joiner.flush()])


def test_crossfade_overlaps_each_join() -> None:
    segments = [np.ones(100, np.float32), np.ones(80, np.float32), np.ones(60, np.float32)]
    joined = join(segments, overlap=10)
    assert len(joined) == 240 - 2 * 10
    assert np.allclose(joined, 1.0)


def test_crossfade_ramps_from_one_segment_into_the_next() -> None:
    joined = join([np.ones(50, np.float32), np.zeros(50, np.float32)], overlap=10)
    fade = joined[40:50]
    assert fade[0] == 1.0
    assert np.all(np.diff(fade) < 0)
    assert np.all(joined[50:] == 0.0)


def test_no_crossfade_concatenates_and_short_segments_are_kept() -> None:
    segments = [np.arange(5, dtype=np.float32), np.arange(3, dtype=np.float32)]
    assert np.array_equal(join(segments, overlap=0), np.concatenate(segments))
    assert len(join([np.ones(4, np.float32), np.ones(2, np.float32)], overlap=10)) == 6


def test_pcm16_clips_and_scales() -> None:
    pcm = np.frombuffer(to_pcm16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0], np.float32)), "<i2")
    assert pcm.tolist() == [-32767, -32767, 0, 16383, 32767, 32767]
