"""`VoiceLoudness`: a voice's calibration speech is made once, through the scheduler, within the asker's
deadline; its gain brings that speech, limited, to the target."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import TONE_VOICE, ToneEngine, tone
from voxserve.audio.loudness import PeakLimiter, db_to_gain, integrated_lufs
from voxserve.conversion.cancellation import Cancellation
from voxserve.engines.base import PreparedSegment, SegmentAudio
from voxserve.errors import DeadlineExceededError
from voxserve.scheduler.pool import Scheduler
from voxserve.service.loudness import CALIBRATION_SENTENCES, LoudnessOptions, VoiceLoudness


def calibration_speech() -> np.ndarray:
    return np.concatenate([tone(len(sentence)) for sentence in CALIBRATION_SENTENCES])


def loudness(scheduler: Scheduler) -> VoiceLoudness:
    options = LoudnessOptions(normalize=True, target_lufs=-18.0, peak_ceiling_dbfs=-1.0)
    return VoiceLoudness(options, scheduler)


def limited_lufs(audio: np.ndarray, gain_db: float) -> float:
    limiter = PeakLimiter(TONE_VOICE.sample_rate, db_to_gain(-1.0))
    out = np.concatenate([limiter.push(audio * np.float32(db_to_gain(gain_db))), limiter.flush()])
    return integrated_lufs(out, TONE_VOICE.sample_rate)


def test_the_gain_brings_the_limited_calibration_speech_to_each_target(scheduler: Scheduler) -> None:
    engine, voices = ToneEngine(), loudness(scheduler)
    gains = {target: voices.gain_db(TONE_VOICE, engine, target, cancellation=Cancellation.after(10))
             for target in (-18.0, -30.0)}  # fmt: skip
    assert engine.ran == CALIBRATION_SENTENCES  # spoken once, through the scheduler, for both targets
    for target, gain in gains.items():
        assert limited_lufs(calibration_speech(), gain) == pytest.approx(target, abs=0.1)
    # At -30 no peak reaches the ceiling; at -18 the limiter takes some loudness back, which the gain makes up.
    assert gains[-18.0] - gains[-30.0] > 12.0


def test_callers_of_one_voice_wait_for_one_calibration(scheduler: Scheduler) -> None:
    engine, voices = ToneEngine(), loudness(scheduler)
    engine.gate.clear()
    with ThreadPoolExecutor(3) as pool:
        asked = [pool.submit(voices.gain_db, TONE_VOICE, engine, -18.0, cancellation=Cancellation.after(10))
                 for _ in range(3)]  # fmt: skip
        assert engine.started.wait(5)
        engine.gate.set()
        gains = {future.result() for future in asked}
    assert len(gains) == 1
    assert engine.ran == CALIBRATION_SENTENCES


def test_a_caller_past_its_deadline_gets_504_and_the_next_caller_measures_again(scheduler: Scheduler) -> None:
    engine, voices = ToneEngine(), loudness(scheduler)
    engine.gate.clear()
    held = threading.Timer(0.5, engine.gate.set)
    held.start()
    with pytest.raises(DeadlineExceededError):
        voices.gain_db(TONE_VOICE, engine, -18.0, cancellation=Cancellation.after(0.1))
    held.join()
    gain = voices.gain_db(TONE_VOICE, engine, -18.0, cancellation=Cancellation.after(10))
    assert limited_lufs(calibration_speech(), gain) == pytest.approx(-18.0, abs=0.1)


def test_a_level_without_a_target_only_limits_and_measures_nothing(scheduler: Scheduler) -> None:
    engine, voices = ToneEngine(), loudness(scheduler)
    level = voices.level(TONE_VOICE, None, lambda: pytest.fail("no target: nothing to measure"))
    loud = tone(100) * 3
    out = np.concatenate([level.push(loud), level.flush()])
    assert np.max(np.abs(out)) <= db_to_gain(-1.0)
    assert engine.ran == []


class LouderToneEngine(ToneEngine):
    """The same voice id, another model: twice as loud."""

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        return [SegmentAudio(audio.samples * 2) for audio in super().run(batch, solo=solo)]


def stored(scheduler: Scheduler, store: Path) -> VoiceLoudness:
    options = LoudnessOptions(normalize=True, target_lufs=-18.0, peak_ceiling_dbfs=-1.0)
    return VoiceLoudness(options, scheduler, store=store)


def test_a_gain_is_kept_across_restarts_while_the_voice_sounds_the_same(scheduler: Scheduler, tmp_path: Path) -> None:
    store = tmp_path / "loudness.json"
    first_run, second_run = ToneEngine(), ToneEngine()
    gain = stored(scheduler, store).gain_db(TONE_VOICE, first_run, -18.0, cancellation=Cancellation.after(10))
    assert first_run.ran == CALIBRATION_SENTENCES
    again = stored(scheduler, store).gain_db(TONE_VOICE, second_run, -18.0, cancellation=Cancellation.after(10))
    assert again == gain
    assert second_run.ran == CALIBRATION_SENTENCES[:1]  # only the fingerprint sentence


def test_a_voice_whose_model_changed_is_measured_again(scheduler: Scheduler, tmp_path: Path) -> None:
    store = tmp_path / "loudness.json"
    gain = stored(scheduler, store).gain_db(TONE_VOICE, ToneEngine(), -30.0, cancellation=Cancellation.after(10))
    louder = LouderToneEngine()
    changed = stored(scheduler, store).gain_db(TONE_VOICE, louder, -30.0, cancellation=Cancellation.after(10))
    assert louder.ran == CALIBRATION_SENTENCES
    assert changed == pytest.approx(gain - 6.02, abs=0.05)


def test_an_unreadable_store_is_ignored_and_written_anew(scheduler: Scheduler, tmp_path: Path) -> None:
    store = tmp_path / "loudness.json"
    store.write_text("{not json", encoding="utf-8")
    gain = stored(scheduler, store).gain_db(TONE_VOICE, ToneEngine(), -18.0, cancellation=Cancellation.after(10))
    assert list(json.loads(store.read_text(encoding="utf-8")).values()) == [gain]
