"""The speech quality gate (issue 18), on the benchmark corpus, through the server's own speech path in-process.

- Phonemes: every segment's phoneme ids against `piper-tts` phonemizing the same text, and how many lines
  voxserve segments (whole sentences) where espeak ends its sentences.
- Loudness, per voice (the bundled Piper voice, two espeak voices, a custom voice converted from the Piper voice):
  integrated loudness of the whole corpus and of each line of 1.5 s or more, true peak, samples at full scale.
- Intelligibility and timing, bundled voice: a pocketsphinx round trip (word error rate against the text) of
  voxserve's responses and of the raw model (each sentence decoded whole, no level stage), and each response's
  length against that whole-sentence decode, on default settings and with the first-segment cut off.

Noise scales 0, so every figure is deterministic for a given machine.

    .venv/bin/python benchmarks/quality.py -o docs/bench/quality.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fair_share import CORPUS, report_header

from voxserve.bench.asr import word_error_rate
from voxserve.bench.corpus import load_corpus
from voxserve.bench.quality import (
    CUSTOM_VOICE,
    ESPEAK_VOICES,
    PIPER_VOICE,
    REFERENCE_TEXT,
    heard,
    loudness_report,
    phoneme_report,
    round_trip,
    speak,
    wav,
    whole_sentence_decodes,
)
from voxserve.conversion.world_converter import reshape_voice
from voxserve.obs.trace import RequestTrace
from voxserve.service.bootstrap import build_conversion_service, build_speech_service
from voxserve.service.conversion import Upload, VoiceRegistration
from voxserve.settings import Settings


def measure(lines: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(noise_scale=0.0, noise_w=0.0, audio_cache_bytes=0, data_dir=Path(data_dir), warmup=False)
        speech = build_speech_service(settings)
        conversion = build_conversion_service(speech, settings)
        whole_sentences = build_speech_service(
            settings.model_copy(update={"first_segment_max_chars": settings.max_segment_chars, "espeak_voices": False})
        )
        try:
            reference = speak(speech, PIPER_VOICE, REFERENCE_TEXT)
            high = reshape_voice(reference, 1.6, 1.15)
            registration = VoiceRegistration(CUSTOM_VOICE, Upload(wav(high), "audio/wav", "high.wav"))
            custom = asyncio.run(conversion.register_voice(registration, RequestTrace(enabled=False)))
            outputs = {voice: [speak(speech, voice, line) for line in lines]
                       for voice in (PIPER_VOICE, *ESPEAK_VOICES)}  # fmt: skip
            outputs[CUSTOM_VOICE] = [speak(speech, custom.id, line) for line in lines]
            raw = whole_sentence_decodes(speech, lines)
            whole = [speak(whole_sentences, PIPER_VOICE, line) for line in lines]
            report = {
                "phonemes": phoneme_report(lines, settings),
                "loudness": {
                    "target_lufs": settings.loudness_target_lufs,
                    "peak_ceiling_dbfs": settings.peak_ceiling_dbfs,
                    "voices": {
                        voice: loudness_report(audio, settings.peak_ceiling_dbfs) for voice, audio in outputs.items()
                    },
                    "raw_model": loudness_report(raw, settings.peak_ceiling_dbfs),
                },
                "round_trip": {
                    "raw_model": {"wer": round(word_error_rate(lines, [heard(audio) for audio in raw]), 4)},
                    "voxserve_default": round_trip(lines, outputs[PIPER_VOICE], raw),
                    "voxserve_whole_sentences": round_trip(lines, whole, raw),
                },
            }
        finally:
            asyncio.run(conversion.close())
            speech.close()
            whole_sentences.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="Write the JSON report here.")
    args = parser.parse_args()
    lines = load_corpus(CORPUS)
    load_start = tuple(round(value, 2) for value in os.getloadavg())
    results = measure(lines)
    load_end = tuple(round(value, 2) for value in os.getloadavg())
    report = {
        **report_header("quality", lines, (load_start, load_end)),
        "setup": {"settings": "defaults, noise_scale 0, noise_w 0, audio cache off", "asr": "pocketsphinx en-us",
                  "custom_voice": "the bundled voice reshaped by WORLD (F0 x1.6, vocal tract warp 1.15), registered"},
        **results,
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
