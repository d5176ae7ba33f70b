from __future__ import annotations

import numpy as np
import pytest

from tests.fakes import FAKE_VOICE, FakeEngine
from voxserve.engines.base import PreparedSegment
from voxserve.engines.faulty import FaultPlan, FaultyEngine
from voxserve.errors import ConfigError
from voxserve.types import SynthesisParams

SEGMENTS = [PreparedSegment(SynthesisParams(text=text, voice=FAKE_VOICE)) for text in ("one", "three")]


def test_specs_parse_and_bad_ones_are_config_errors() -> None:
    assert FaultPlan.parse("raise=0.05, hang=0.01,garbage=0.2") == FaultPlan(0.05, 0.01, 0.2)
    assert FaultPlan.parse("") == FaultPlan()
    for bad in ("raise=2", "boom=0.1", "raise=0.7,hang=0.7", "raise"):
        with pytest.raises(ConfigError):
            FaultPlan.parse(bad)


def test_faults_come_at_their_rates_and_the_rest_run_normally() -> None:
    engine = FaultyEngine(FakeEngine(), FaultPlan(raise_rate=0.2, garbage_rate=0.2, seed=3))
    outcomes = {"raise": 0, "garbage": 0, "ok": 0}
    for _ in range(500):
        try:
            outputs = engine.run(SEGMENTS)
        except RuntimeError:
            outcomes["raise"] += 1
            continue
        good = len(outputs) == 2 and all(np.isfinite(output.samples).all() for output in outputs)
        outcomes["ok" if good else "garbage"] += 1
    assert outcomes["raise"] == engine.injected["raise"]
    assert outcomes["garbage"] == engine.injected["garbage"]
    assert 70 <= outcomes["raise"] <= 130
    assert 70 <= outcomes["garbage"] <= 130


def test_a_hang_lasts_until_released_and_warmup_stays_clean() -> None:
    engine = FaultyEngine(FakeEngine(), FaultPlan(hang_rate=1.0, hang_s=0.01))
    engine.warmup()
    assert len(engine.run(SEGMENTS)) == 2
    assert engine.injected["hang"] == 1
    engine.release_hangs()
    assert engine.runtime_info()["fault_injection"] == {"raise": 0, "hang": 1, "garbage": 0}
