"""A Piper voice's `.onnx.json`: phoneme ids, speakers and default scales, shared by both Piper backends."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np

from voxserve.engines.base import Alignment, PreparedSegment, SegmentAudio
from voxserve.errors import ConfigError
from voxserve.frontend.alignment import align_words
from voxserve.types import SynthesisParams, VoiceInfo

if TYPE_CHECKING:  # the phonemizer loads espeak-ng; the GPU benchmark runs on precomputed phoneme ids without it
    from voxserve.frontend.phonemize import Phonemizer

_BOS, _EOS, _PAD = "^", "$", "_"
SPEAKER_SEPARATOR = "@"


def find_piper_models(directory: Path) -> list[Path]:
    """Every `NAME.onnx` in `directory` (recursively) that has its `NAME.onnx.json` beside it."""
    if not directory.is_dir():
        raise ConfigError(f"voices directory not found: {directory}")
    return sorted(path for path in directory.rglob("*.onnx") if path.with_name(path.name + ".json").is_file())


@dataclass(frozen=True, slots=True)
class PiperScales:
    """The model's `scales` input: prior noise, length (inverse speed) and duration noise."""

    noise: float
    length: float
    noise_w: float


class PiperVoiceConfig:
    """What a Piper voice's config says: sample rate, espeak voice, phoneme ids, speakers, default scales."""

    def __init__(self, model_path: Path) -> None:
        config_path = model_path.with_name(model_path.name + ".json")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            self.sample_rate = int(config["audio"]["sample_rate"])
            self.espeak_voice = str(config["espeak"]["voice"])
            self.phoneme_id_map: dict[str, list[int]] = config["phoneme_id_map"]
            inference = config.get("inference", {})
            self.speaker_ids: dict[str, int] = config.get("speaker_id_map") or {}
            self.language = str(config.get("language", {}).get("code", self.espeak_voice))
            self.phoneme_map: dict[str, list[str]] = config.get("phoneme_map") or {}
            self.phoneme_type = str(config.get("phoneme_type", "espeak"))
            # Vowels the voice was trained on as one phoneme ("a" "ɪ" -> "aɪ"), longest first.
            clusters = config.get("vowel_clusters") or ()
            self.vowel_clusters = sorted(("".join(cluster) for cluster in clusters), key=len, reverse=True)
            self.noise_scale = float(inference.get("noise_scale", 0.667))
            self.length_scale = float(inference.get("length_scale", 1.0))
            self.noise_w = float(inference.get("noise_w", 0.8))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"cannot read Piper voice config {config_path}: {exc}") from exc
        if self.phoneme_type not in ("espeak", "text"):
            raise ConfigError(
                f"Piper voice {config_path} uses phoneme_type {self.phoneme_type!r}; voxserve reads 'espeak' and 'text'"
            )
        self.name = model_path.name.removesuffix(".onnx")

    def voices(self, engine: str) -> list[VoiceInfo]:
        if len(self.speaker_ids) <= 1:
            return [VoiceInfo(self.name, engine, self.language, self.sample_rate, self.name)]
        return [
            VoiceInfo(f"{self.name}{SPEAKER_SEPARATOR}{speaker}", engine, self.language, self.sample_rate, self.name,
                      speakers=(speaker,))
            for speaker in self.speaker_ids
        ]  # fmt: skip

    def prepare(self, params: SynthesisParams, phonemizer: Phonemizer) -> PreparedSegment:
        phonemes = self.phonemes(params.text, phonemizer)
        ids, sources = self.phoneme_ids_with_sources(phonemes)
        words = ()
        if params.timestamps:
            words = tuple(align_words(params.text, phonemes, lambda word: self.phonemes(word, phonemizer)))
        return PreparedSegment(params, phonemes, ids, sources, words)

    def phonemes(self, text: str, phonemizer: Phonemizer) -> str:
        """What the voice was trained on: espeak's phonemes, or for `text` voices the characters themselves."""
        if self.phoneme_type == "text":
            return unicodedata.normalize("NFD", text)
        return phonemizer.phonemize(text, self.espeak_voice)

    def phoneme_ids(self, phonemes: str) -> tuple[int, ...]:
        return self.phoneme_ids_with_sources(phonemes)[0]

    def phoneme_ids_with_sources(self, phonemes: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Piper's id layout, `^ _ (phoneme _)* $` (phonemes the voice does not know are dropped), and for each
        id the index in `phonemes` of the phoneme it stands for (-1 for the markers and the padding)."""
        pad = self.phoneme_id_map[_PAD]
        ids = [*self.phoneme_id_map[_BOS], *pad]
        sources = [-1] * len(ids)
        index = 0
        while index < len(phonemes):
            phoneme = next((c for c in self.vowel_clusters if phonemes.startswith(c, index)), phonemes[index])
            for mapped in self.phoneme_map.get(phoneme, [phoneme]):
                if mapped in self.phoneme_id_map:
                    ids += [*self.phoneme_id_map[mapped], *pad]
                    sources += [index] * len(self.phoneme_id_map[mapped]) + [-1] * len(pad)
            index += len(phoneme)
        ids += self.phoneme_id_map[_EOS]
        sources += [-1] * len(self.phoneme_id_map[_EOS])
        return tuple(ids), tuple(sources)

    @property
    def pad_id(self) -> int:
        return self.phoneme_id_map[_PAD][0]

    def scales(self, params: SynthesisParams) -> PiperScales:
        return PiperScales(
            self.noise_scale if params.noise_scale is None else params.noise_scale,
            self.length_scale / params.speed,
            self.noise_w if params.noise_w is None else params.noise_w,
        )

    def speaker_id(self, params: SynthesisParams) -> int:
        return self.speaker_ids.get(params.voice.speakers[0], 0) if params.voice.speakers else 0


def align(segment: PreparedSegment, id_samples: np.ndarray) -> Alignment | None:
    """A timed segment's alignment from the samples each of its phoneme ids took: a character's sound is its ids
    with the padding after them (the end marker goes with the last character; the start marker and its padding
    are the silence before the first). A character the voice has no id for takes no time. `None` for a segment
    prepared without `timestamps`."""
    if not segment.params.timestamps:
        return None
    bounds = np.concatenate([[0], np.cumsum(id_samples)])
    count = len(segment.phonemes)
    starts = np.full(count, -1, dtype=np.int64)
    ends = np.full(count, -1, dtype=np.int64)
    owner = -1
    for index, source in enumerate(segment.id_sources):
        owner = source if source >= 0 else owner
        if owner < 0:
            continue
        if starts[owner] < 0:
            starts[owner] = bounds[index]
        ends[owner] = bounds[index + 1]
    first = next((index for index, source in enumerate(segment.id_sources) if source >= 0), len(id_samples))
    previous_end = int(bounds[first])
    for index in range(count):
        if starts[index] < 0:
            starts[index] = ends[index] = previous_end
        previous_end = int(ends[index])
    return Alignment(segment.phonemes, starts, ends, segment.words)


def same_call_groups(batch: Sequence[PreparedSegment]) -> list[list[int]]:
    """Indices of `batch` grouped by `call_key`, in first-seen order."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for index, segment in enumerate(batch):
        groups.setdefault(segment.call_key, []).append(index)
    return list(groups.values())


class HasVoiceConfig(Protocol):
    config: PiperVoiceConfig


M = TypeVar("M", bound=HasVoiceConfig)


class PiperVoices(Generic[M]):
    """The loaded models of one Piper backend, by voice id: what both backends' `voices` and `prepare` need."""

    def __init__(self, models: Sequence[M], engine: str, phonemizer: Phonemizer) -> None:
        self.models = list(models)
        self._engine = engine
        self._phonemizer = phonemizer
        self._by_voice = {voice.id: model for model in self.models for voice in model.config.voices(engine)}

    def voices(self) -> list[VoiceInfo]:
        return [voice for model in self.models for voice in model.config.voices(self._engine)]

    def model(self, segment: PreparedSegment) -> M:
        return self._by_voice[segment.params.voice.id]

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        return self._by_voice[params.voice.id].config.prepare(params, self._phonemizer)

    def run(
        self, batch: Sequence[PreparedSegment], synthesize: Callable[[M, list[PreparedSegment]], list[SegmentAudio]]
    ) -> list[SegmentAudio]:
        """`synthesize` once per group of segments that can share a call; the audio back in `batch`'s order."""
        outputs: list[SegmentAudio] = [SegmentAudio(np.empty(0, np.float32))] * len(batch)
        for group in same_call_groups(batch):
            model = self.model(batch[group[0]])
            for index, audio in zip(group, synthesize(model, [batch[i] for i in group]), strict=True):
                outputs[index] = audio
        return outputs

    def warmup_segment(self, model: M) -> PreparedSegment:
        return self.prepare(SynthesisParams(text="Warm up.", voice=model.config.voices(self._engine)[0]))
