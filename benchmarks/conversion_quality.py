"""Voice-conversion quality on source/target pairs built offline from the bundled voices.

For each pair it reports the output's median F0 against the target reference's, the conversion's real-time
factor, and (with the `quality` extra: resemblyzer on a local CPU torch) the speaker-embedding cosine of the
output to the target and to the source. A pair passes when the F0 is within 10% of the target's and the output
is closer to the target than to the source.

    python benchmarks/conversion_quality.py [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxserve.conversion.base import ConversionOptions
from voxserve.conversion.features import VoiceFeatures, extract_voice_features
from voxserve.conversion.world_converter import WorldConverter, reshape_voice
from voxserve.service.bootstrap import build_speech_service
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
WINDOW_S = 4.0
OVERLAP_S = 0.25


@dataclass(frozen=True)
class Voice:
    name: str
    source: AudioChunk
    reference: AudioChunk


def speak(service, voice: str, text: str) -> AudioChunk:
    import asyncio

    async def collect() -> AudioChunk:
        stream = service.open(SpeechJob(text=text, voice=voice, response_format="wav", use_cache=False))
        chunks = [chunk.samples async for chunk in stream.audio()]
        return AudioChunk(np.concatenate(chunks), stream.voice.sample_rate)

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


def convert(source: AudioChunk, target: VoiceFeatures, converter: WorldConverter) -> tuple[AudioChunk, float]:
    from voxserve.conversion.windows import WindowedConversion

    started = time.perf_counter()
    source_features = extract_voice_features(source)
    plan = converter.plan(source_features, target, ConversionOptions())
    rate = source.sample_rate
    windows = WindowedConversion(
        lambda samples: plan.apply(samples, rate), overlap=round(OVERLAP_S * rate), min_window=round(WINDOW_S * rate)
    )
    step = round(WINDOW_S * rate)
    pieces = [windows.push(source.samples[i : i + step]) for i in range(0, len(source.samples), step)]
    pieces.append(windows.flush())
    elapsed = time.perf_counter() - started
    return AudioChunk(np.concatenate(pieces), rate), elapsed / source.duration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Write sources, references and outputs as WAV here.")
    parser.add_argument("--envelope-strength", type=float, default=1.0)
    args = parser.parse_args()
    voices = build_voices()
    converter = WorldConverter(envelope_strength=args.envelope_strength)
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav

        encoder = VoiceEncoder("cpu", verbose=False)

        def embed(audio: AudioChunk) -> np.ndarray:
            return encoder.embed_utterance(preprocess_wav(audio.samples, source_sr=audio.sample_rate))
    except ImportError:
        embed = None
    print("| source -> target | target F0 | output F0 | F0 error | cos(target) | cos(source) | RTF | pass |")
    print("|---|---|---|---|---|---|---|---|")
    for source_name, target_name in PAIRS:
        source, target = voices[source_name], voices[target_name]
        target_features = extract_voice_features(target.reference)
        output, rtf = convert(source.source, target_features, converter)
        output_f0 = extract_voice_features(output).f0_median_hz
        error = abs(output_f0 - target_features.f0_median_hz) / target_features.f0_median_hz
        passed = error <= 0.10
        cosines = "| n/a | n/a "
        if embed is not None:
            out_embedding = embed(output)
            to_target = float(np.dot(out_embedding, embed(target.reference)))
            to_source = float(np.dot(out_embedding, embed(source.source)))
            passed = passed and to_target > to_source
            cosines = f"| {to_target:.3f} | {to_source:.3f} "
        print(
            f"| {source_name} -> {target_name} | {target_features.f0_median_hz:.0f} Hz | {output_f0:.0f} Hz "
            f"| {error:.1%} {cosines}| {rtf:.3f} | {'yes' if passed else 'no'} |"
        )
        if args.out:
            import av  # noqa: F401

            args.out.mkdir(parents=True, exist_ok=True)
            from voxserve.audio.encode import create_encoder

            for label, audio in (("out", output), ("src", source.source), ("ref", target.reference)):
                encoder_ = create_encoder("wav", audio.sample_rate)
                data = encoder_.encode(audio.samples) + encoder_.flush()
                (args.out / f"{source_name}_to_{target_name}.{label}.wav").write_bytes(data)


if __name__ == "__main__":
    main()
