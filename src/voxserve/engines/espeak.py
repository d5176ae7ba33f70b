"""espeak-ng's own formant voices (100+ languages) through `libespeak-ng` from `espeakng-loader`."""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import espeakng_loader
import numpy as np

from voxserve.engines.base import Alignment, EngineProfile, PreparedSegment, SegmentAudio
from voxserve.errors import ConfigError, EngineError
from voxserve.frontend.alignment import WordSpan, words_of
from voxserve.types import SynthesisParams, VoiceInfo

VOICE_PREFIX = "espeak:"
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_DEFAULT_RATE_WPM = 175
_RATE_RANGE_WPM = (80, 450)
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7


class _EspeakEvent(ctypes.Structure):
    """`espeak_EVENT`; `id` is a union whose phoneme name is up to 8 UTF-8 bytes."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters of the text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),  # where the event falls in the audio, in samples
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


@dataclass(frozen=True, slots=True)
class _Event:
    kind: int
    text_position: int
    length: int
    sample: int
    name: str


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
    RTF < 0.01). Voice ids are `espeak:<language>`, e.g. `espeak:en-us`, `espeak:de`. A timed segment is aligned
    from espeak-ng's own word and phoneme events, which say where each falls in the audio."""

    name = "espeak"
    supports_batching = False
    supports_windows = False
    supports_instructions = False
    supports_timestamps = True

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA,
        )  # fmt: skip
        if self.sample_rate <= 0:
            raise ConfigError("espeak-ng failed to initialize")
        self._pieces: list[np.ndarray] = []
        self._events: list[_Event] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced: espeak calls it until shutdown
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()
        self._voices = self._list_voices()

    def _collect(self, samples: ctypes.Array, count: int, events: ctypes.Array) -> int:
        if count > 0:
            self._pieces.append(np.ctypeslib.as_array(samples, shape=(count,)).astype(np.float32) / 32768.0)
        index = 0
        while events and events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type in (_EVENT_WORD, _EVENT_PHONEME):
                name = event.id.decode("utf-8", "replace") if event.type == _EVENT_PHONEME else ""
                self._events.append(_Event(event.type, event.text_position, event.length, event.sample, name))
            index += 1
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

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        return [self._synthesize(segment.params) for segment in batch]

    def _synthesize(self, params: SynthesisParams) -> SegmentAudio:
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
            events, self._events = self._events, []
        if status != 0:
            raise EngineError(f"espeak-ng synthesis failed with status {status}")
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return SegmentAudio(samples, _align(params.text, events, len(samples)) if params.timestamps else None)

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


def _align(text: str, events: Sequence[_Event], total: int) -> Alignment:
    """espeak-ng's events as an alignment: each phoneme lasts from its event to the next one (or the end); a
    phoneme event without a name is a pause; a word holds the phonemes that follow its event."""
    phonemes: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    words: list[WordSpan] = []
    word: tuple[int, int] | None = None
    first = last = 0
    timed = [event for event in events if event.kind == _EVENT_PHONEME]
    following = {id(event): after.sample for event, after in itertools.pairwise(timed)}

    def close_word() -> None:
        if word is not None and last > first:
            words.append(WordSpan(word[0], word[1], first, last))

    for event in events:
        if event.kind == _EVENT_WORD:
            close_word()
            start = min(max(event.text_position - 1, 0), len(text))
            word, first, last = (start, min(start + max(event.length, 0), len(text))), len(phonemes), len(phonemes)
            continue
        end = max(following.get(id(event), total), event.sample)
        symbol = event.name or " "  # a pause
        phonemes += symbol
        starts += [event.sample] * len(symbol)
        ends += [end] * len(symbol)
        if event.name:
            last = len(phonemes)
    close_word()
    return Alignment("".join(phonemes), np.array(starts, np.int64), np.array(ends, np.int64), _whole_words(text, words))


def _whole_words(text: str, words: list[WordSpan]) -> tuple[WordSpan, ...]:
    """espeak-ng's words, merged into the words of the text they fall in: it speaks "$5" as "$" and "5", and
    "didn't" as "didn" plus a sound of its own."""
    tokens = words_of(text)
    merged: list[WordSpan] = []
    for word in words:
        token = next(((start, end) for start, end in tokens if start <= word.char_start < end), None)
        start, end = token or (word.char_start, word.char_end)
        if merged and merged[-1].char_start == start:
            merged[-1] = WordSpan(start, end, merged[-1].first, word.last)
        else:
            merged.append(WordSpan(start, end, word.first, word.last))
    return tuple(merged)
