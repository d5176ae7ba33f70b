from __future__ import annotations

import numpy as np
import pytest
import soxr

from voxserve.audio.loudness import SILENT_LUFS, PeakLimiter, db_to_gain, integrated_lufs, true_peak_db

RATE = 22050


def tone(seconds: float, amplitude: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def limited(limiter: PeakLimiter, chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([*(limiter.push(chunk) for chunk in chunks), limiter.flush()])


def test_loudness_follows_level_and_short_or_silent_audio_has_none() -> None:
    quiet, loud = integrated_lufs(tone(2, 0.1), RATE), integrated_lufs(tone(2, 0.4), RATE)
    assert loud - quiet == pytest.approx(20 * np.log10(4), abs=0.05)
    assert integrated_lufs(np.zeros(RATE * 2, np.float32), RATE) == SILENT_LUFS
    assert integrated_lufs(tone(0.2, 0.5), RATE) == SILENT_LUFS


def test_true_peak_sees_a_peak_between_samples() -> None:
    # A tone at a quarter of the rate, sampled 45 degrees off its crests: samples reach 0.707, the wave 1.0.
    t = np.arange(RATE) / RATE
    samples = np.sin(2 * np.pi * (RATE / 4) * t + np.pi / 4).astype(np.float32)
    assert np.max(np.abs(samples)) == pytest.approx(0.707, abs=0.01)
    assert true_peak_db(samples, RATE) == pytest.approx(0.0, abs=0.3)


def test_no_sample_passes_the_ceiling_and_the_peak_is_held_close_to_it() -> None:
    ceiling = db_to_gain(-1.0)
    rng = np.random.default_rng(7)
    loud = np.concatenate([tone(0.5, 0.3), tone(0.5, 3.0), (rng.standard_normal(RATE) * 2).astype(np.float32)])
    out = limited(PeakLimiter(RATE, ceiling), [loud])
    assert len(out) == len(loud)
    assert np.max(np.abs(out)) <= ceiling
    assert np.max(np.abs(out)) > 0.95 * ceiling


def test_audio_under_the_ceiling_passes_unchanged_after_the_lookahead() -> None:
    quiet = tone(1.0, 0.5)
    assert np.array_equal(limited(PeakLimiter(RATE, db_to_gain(-1.0)), [quiet]), quiet)


def test_a_stream_cut_anywhere_comes_out_as_the_whole() -> None:
    rng = np.random.default_rng(3)
    audio = np.concatenate([tone(0.3, 0.2), tone(0.4, 2.5, 180.0), tone(0.3, 0.6)])
    whole = limited(PeakLimiter(RATE, 0.9), [audio])
    cuts = np.sort(rng.choice(len(audio), 40, replace=False))
    pieces = [audio[:1], *np.split(audio[1:], cuts), np.zeros(0, np.float32)]
    assert np.array_equal(limited(PeakLimiter(RATE, 0.9), pieces), whole)


def test_the_gain_falls_before_a_peak_instead_of_stepping_at_it() -> None:
    """A click is a step in gain: the largest change from one sample's gain to the next stays small."""
    audio = np.concatenate([tone(0.2, 0.5), tone(0.2, 2.0)])
    out = limited(PeakLimiter(RATE, 0.9), [audio])
    gain = out[: len(audio)] / np.where(np.abs(audio) > 1e-3, audio, np.nan)
    assert np.nanmax(np.abs(np.diff(gain))) < 0.05


def test_flush_starts_a_new_stream() -> None:
    limiter = PeakLimiter(RATE, 0.9)
    first = limited(limiter, [tone(0.2, 3.0)])
    assert np.array_equal(limited(limiter, [tone(0.2, 3.0)]), first)


def test_peaks_between_samples_are_held_under_the_ceiling_too() -> None:
    ceiling = db_to_gain(-1.0)
    t = np.arange(RATE) / RATE
    between = (1.4 * np.sin(2 * np.pi * (RATE / 4) * t + np.pi / 4)).astype(np.float32)  # samples 0.99, wave 1.4
    rng = np.random.default_rng(11)
    # Loud noise with speech's bandwidth (under 8 kHz), peaking past full scale between samples and on them.
    noise = soxr.resample((rng.standard_normal(16_000) * 0.8).astype(np.float32), 16_000, RATE)
    for audio in (between, noise):
        out = limited(PeakLimiter(RATE, ceiling), [audio])
        assert true_peak_db(out, RATE) <= -1.0 + 0.05
