"""`VoiceRegistry`: which engine speaks a voice name, and which model names are accepted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from voxserve.engines.base import Engine
from voxserve.errors import ConfigError, InvalidRequestError, ModelNotFoundError, VoiceNotFoundError
from voxserve.settings import OPENAI_MODEL_NAMES
from voxserve.types import VoiceInfo


class VoiceRegistry:
    """Voices of every loaded engine, plus aliases (OpenAI's voice names) onto them."""

    def __init__(self, engines: Sequence[Engine], aliases: Mapping[str, str], default_voice: str) -> None:
        self._engines = {engine.name: engine for engine in engines}
        self._voices = {voice.id: voice for engine in engines for voice in engine.voices()}
        if default_voice not in self._voices:
            raise ConfigError(f"default voice {default_voice!r} is not among the loaded voices")
        unknown = {alias: target for alias, target in aliases.items() if target not in self._voices}
        if unknown:
            raise ConfigError(f"voice aliases point at unknown voices: {unknown}")
        self._aliases = dict(aliases)
        self.default_voice = self._voices[default_voice]

    def engine(self, voice: VoiceInfo) -> Engine:
        return self._engines[voice.engine]

    def engines(self) -> list[Engine]:
        return list(self._engines.values())

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices.values())

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def models(self) -> list[str]:
        """OpenAI's model names (aliases of the default voice's engine) and every engine's own name."""
        return [*OPENAI_MODEL_NAMES, *self._engines]

    def resolve(self, voice: str, model: str) -> VoiceInfo:
        """The voice a request names. A model that names an engine may leave out that engine's voice prefix
        (`model="espeak", voice="de"`)."""
        if model not in OPENAI_MODEL_NAMES and model not in self._engines:
            raise ModelNotFoundError(f"unknown model {model!r}; available: {', '.join(self.models())}", param="model")
        voice_id = self._aliases.get(voice, voice)
        found = self._voices.get(voice_id) or self._voices.get(f"{model}:{voice_id}")
        if found is None:
            raise VoiceNotFoundError(f"unknown voice {voice!r}; GET /v1/audio/voices lists them", param="voice")
        if model in self._engines and found.engine != model:
            raise InvalidRequestError(
                f"voice {voice!r} is spoken by engine {found.engine!r}, not {model!r}", param="model"
            )
        return found
