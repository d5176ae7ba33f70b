"""Voice-conversion quality on source/target pairs built offline from the bundled voices.

For each pair it reports the output's median F0 against the target reference's, the conversion's real-time
factor, and (with the `quality` extra: resemblyzer on a local CPU torch) the speaker-embedding cosine of the
output to the target and to the source. A pair passes when the F0 is within 10% of the target's and the output
is closer to the target than to the source.

    python benchmarks/conversion_quality.py [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxserve.audio.encode import create_encoder
from voxserve.conversion.features import extract_voice_features
from voxserve.conversion.world_converter import reshape_voice
from voxserve.obs.trace import RequestTrace
from voxserve.service.bootstrap import build_conversion_service, build_speech_service
from voxserve.service.conversion import ConversionJob, ConversionService, Upload
from voxserve.service.speech import SpeechJob
from voxserve.settings import Settings
from voxserve.types import AudioChunk

SOURCE_TEXT = (
    "Please hold while I connect you to the next available agent. "
    "The library closes early today, so return your books before five o'clock."
)
REFERENCE_TEXT = (
    "Welcome back! You have three new messages and one missed call. The meeting has been moved to Thursday "
    "afternoon, and the quarterly report is due at the end of the month. Turn left at the next corner, then "
    "walk two blocks to the station."
)


@dataclass(frozen=True)
class Voice:
    name: str
    source: AudioChunk
    reference: AudioChunk


def speak(service, voice: str, text: str) -> AudioChunk:
    async def collect() -> AudioChunk:
        stream = service.open(SpeechJob(text=text, voice=voice, response_format="wav", use_cache=False))
        chunks = [chunk.samples async for chunk in stream.audio()]
        return AudioChunk(np.concatenate(chunks), stream.sample_rate)

    return asyncio.run(collect())


def build_voices() -> dict[str, Voice]:
    service = build_speech_service(Settings(noise_scale=0.667, noise_w=0.8, warmup=False, audio_cache_bytes=0))
    try:
        voices = {}
        for name, voice_id in (
            ("joe", "en_US-joe-medium"),
            ("espeak-us", "espeak:en-us"),
            ("espeak-rp", "espeak:en-gb-x-rp"),
        ):
            voices[name] = Voice(name, speak(service, voice_id, SOURCE_TEXT), speak(service, voice_id, REFERENCE_TEXT))
    finally:
        service.close()
    joe = voices["joe"]
    for name, pitch, warp in (("joe-high", 1.7, 1.18), ("joe-low", 0.72, 0.9)):
        voices[name] = Voice(name, reshape_voice(joe.source, pitch, warp), reshape_voice(joe.reference, pitch, warp))
    return voices


PAIRS = (
    ("joe", "joe-high"), ("joe", "joe-low"), ("joe", "espeak-us"), ("joe", "espeak-rp"),
    ("espeak-us", "joe"), ("espeak-rp", "joe-high"), ("joe-high", "joe-low"),
)  # fmt: skip


def wav(audio: AudioChunk) -> bytes:
    encoder = create_encoder("wav", audio.sample_rate)
    return encoder.encode(audio.samples) + encoder.flush()


async def convert(conversion: ConversionService, source: AudioChunk, target: AudioChunk) -> tuple[AudioChunk, float]:
    """Through the server's own conversion path (decode, profile the source, windows); RTF over the source."""
    started = time.perf_counter()
    job = ConversionJob(source=Upload(wav(source)), target=Upload(wav(target)), response_format="wav")
    stream = await conversion.open(job, RequestTrace(enabled=False))
    chunks = [chunk.samples async for chunk in stream.audio()]
    elapsed = time.perf_counter() - started
    return AudioChunk(np.concatenate(chunks), stream.sample_rate), elapsed / source.duration_s


def speaker_embedder() -> Callable[[AudioChunk], np.ndarray] | None:
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError:
        return None
    encoder = VoiceEncoder("cpu", verbose=False)
    return lambda audio: encoder.embed_utterance(preprocess_wav(audio.samples, source_sr=audio.sample_rate))


async def run_pairs(conversion: ConversionService, voices: dict[str, Voice], out: Path | None) -> None:
    embed = speaker_embedder()
    print("| source -> target | target F0 | output F0 | F0 error | cos(target) | cos(source) | RTF | pass |")
    print("|---|---|---|---|---|---|---|---|")
    for source_name, target_name in PAIRS:
        source, target = voices[source_name], voices[target_name]
        output, rtf = await convert(conversion, source.source, target.reference)
        target_f0 = extract_voice_features(target.reference).f0_median_hz
        output_f0 = extract_voice_features(output).f0_median_hz
        error = abs(output_f0 - target_f0) / target_f0
        passed = error <= 0.10
        cosines = "| n/a | n/a "
        if embed is not None:
            out_embedding = embed(output)
            to_target = float(np.dot(out_embedding, embed(target.reference)))
            to_source = float(np.dot(out_embedding, embed(source.source)))
            passed = passed and to_target > to_source
            cosines = f"| {to_target:.3f} | {to_source:.3f} "
        print(
            f"| {source_name} -> {target_name} | {target_f0:.0f} Hz | {output_f0:.0f} Hz "
            f"| {error:.1%} {cosines}| {rtf:.3f} | {'yes' if passed else 'no'} |"
        )
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for label, audio in (("out", output), ("src", source.source), ("ref", target.reference)):
                (out / f"{source_name}_to_{target_name}.{label}.wav").write_bytes(wav(audio))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Write sources, references and outputs as WAV here.")
    parser.add_argument("--envelope-strength", type=float, default=1.0)
    args = parser.parse_args()
    voices = build_voices()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            warmup=False, espeak_voices=False, data_dir=Path(data_dir),
            conversion_envelope_strength=args.envelope_strength,
        )  # fmt: skip
        speech = build_speech_service(settings)
        conversion = build_conversion_service(speech, settings)
        try:
            asyncio.run(run_pairs(conversion, voices, args.out))
        finally:
            asyncio.run(conversion.close())
            speech.close()


if __name__ == "__main__":
    main()
