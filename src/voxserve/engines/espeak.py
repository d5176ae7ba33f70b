"""espeak-ng's own formant voices (100+ languages) through `libespeak-ng` from `espeakng-loader`."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path

import espeakng_loader
import numpy as np

from voxserve.engines.base import EngineProfile, PreparedSegment, SegmentAudio
from voxserve.errors import ConfigError, EngineError
from voxserve.types import SynthesisParams, VoiceInfo

VOICE_PREFIX = "espeak:"
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_DEFAULT_RATE_WPM = 175
_RATE_RANGE_WPM = (80, 450)
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _EspeakVoice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def _languages(voice: _EspeakVoice) -> list[str]:
    """Decode espeak's language list: repeated (priority byte, NUL-terminated name), ended by a zero byte.
    Read entry by entry: reading a fixed length past the list can touch unmapped memory."""
    languages, address = [], voice.languages
    while ctypes.string_at(address, 1) != b"\0":
        name = ctypes.string_at(address + 1)
        languages.append(name.decode())
        address += len(name) + 2
    return languages


class EspeakEngine:
    """Formant synthesis: one library instance, serialized (espeak-ng is not thread-safe, and fast enough:
    RTF < 0.01). Voice ids are `espeak:<language>`, e.g. `espeak:en-us`, `espeak:de`."""

    name = "espeak"
    supports_batching = False
    supports_instructions = False
    supports_timestamps = False

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if self.sample_rate <= 0:
            raise ConfigError("espeak-ng failed to initialize")
        self._pieces: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced: espeak calls it until shutdown
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()
        self._voices = self._list_voices()

    def _collect(self, samples: ctypes.Array, count: int, _events: int) -> int:
        if count > 0:
            self._pieces.append(np.ctypeslib.as_array(samples, shape=(count,)).astype(np.float32) / 32768.0)
        return 0

    def _list_voices(self) -> dict[str, VoiceInfo]:
        listed = self._lib.espeak_ListVoices(None)
        voices: dict[str, VoiceInfo] = {}
        index = 0
        while listed[index]:
            voice = listed[index].contents
            for language in _languages(voice):
                voice_id = VOICE_PREFIX + language
                voices.setdefault(
                    voice_id, VoiceInfo(voice_id, self.name, language, self.sample_rate, voice.name.decode())
                )
            index += 1
        return voices

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices.values())

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        return PreparedSegment(params)

    def run(self, batch: Sequence[PreparedSegment], *, solo: bool = False) -> list[SegmentAudio]:
        return [SegmentAudio(self._synthesize(segment.params)) for segment in batch]

    def _synthesize(self, params: SynthesisParams) -> np.ndarray:
        text = params.text.encode()
        rate = int(np.clip(_DEFAULT_RATE_WPM * params.speed, *_RATE_RANGE_WPM))
        with self._lock:
            self._pieces = []
            if self._lib.espeak_SetVoiceByName(params.voice.language.encode()) != 0:
                raise EngineError(f"espeak-ng cannot select voice {params.voice.id}")
            self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            status = self._lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            pieces, self._pieces = self._pieces, []
        if status != 0:
            raise EngineError(f"espeak-ng synthesis failed with status {status}")
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    def warmup(self) -> None:
        voice = self._voices.get(VOICE_PREFIX + "en-us") or next(iter(self._voices.values()))
        self._synthesize(SynthesisParams(text="Warm up.", voice=voice))

    def runtime_info(self) -> dict[str, object]:
        return {"runtime": "libespeak-ng", "voices": len(self._voices), "concurrency": "one call at a time"}

    def start_profiling(self, directory: Path) -> None:
        """libespeak-ng has no profiler; its calls still appear as model spans in a capture."""

    def stop_profiling(self) -> list[EngineProfile]:
        return []

    def release_memory(self) -> None:
        """libespeak-ng keeps no pool of its own."""
