"""Voice-conversion quality on source/target pairs built offline from the bundled voices.

For each pair it reports the output's median F0 against the target reference's, the conversion's real-time
factor, the output's peak and samples at full scale, and (with the `quality` extra: resemblyzer on a local CPU
torch) the speaker-embedding cosine of the output to the target and to the source, and a speech recognition round
trip (pocketsphinx: word error rate of the source and of the output against the source's text). A pair passes
when the F0 is within 10% of the target's, nothing clips, and (when measured) the output is closer to the target
than to the source. Degraded recordings (issue 18): telephone audio (8 kHz samples), the same with noise at 20 dB
SNR, and a 16 kbps MP3, as sources and as targets. Each round speaks the recordings anew; the report gives each
pair's medians over the rounds.

    python benchmarks/conversion_quality.py [--out DIR] [-o docs/bench/conversion_quality.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soxr
from fair_share import report_header

from voxserve.audio.decode import decode_audio
from voxserve.bench.asr import transcribe, word_error_rate
from voxserve.bench.quality import speak, wav
from voxserve.conversion.features import extract_voice_features, speech_level_dbfs
from voxserve.conversion.world_converter import reshape_voice
from voxserve.obs.trace import RequestTrace
from voxserve.service.bootstrap import build_conversion_service, build_speech_service
from voxserve.service.conversion import ConversionJob, ConversionService, Upload
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
    for name in ("joe", "joe-high"):
        for damage, degrade in DAMAGES.items():
            voice = voices[name]
            voices[f"{name}-{damage}"] = Voice(f"{name}-{damage}", degrade(voice.source), degrade(voice.reference))
    return voices


def telephone(audio: AudioChunk) -> AudioChunk:
    """As a phone line carries it: 8 kHz samples, nothing above 4 kHz."""
    return AudioChunk(soxr.resample(audio.samples, audio.sample_rate, 8000).astype(np.float32), 8000)


def noisy_telephone(audio: AudioChunk) -> AudioChunk:
    """Telephone audio with white noise 20 dB under the speech's active level."""
    phone = telephone(audio)
    noise_rms = 10 ** ((speech_level_dbfs(phone) - 20) / 20)
    noise = np.random.default_rng(18).standard_normal(len(phone.samples)) * noise_rms
    return AudioChunk((phone.samples + noise).astype(np.float32), phone.sample_rate)


def low_bitrate_mp3(audio: AudioChunk) -> AudioChunk:
    """Through a 16 kbps MP3 at 16 kHz, as voice notes and old recordings come."""
    resampled = soxr.resample(audio.samples, audio.sample_rate, 16_000).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=16_000, layout="mono")
        stream.bit_rate = 16_000
        frame = av.AudioFrame.from_ndarray(resampled[None, :], format="flt", layout="mono")
        frame.sample_rate = 16_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return decode_audio(buffer.getvalue(), "audio/mpeg")


DAMAGES = {"phone": telephone, "noisy-phone": noisy_telephone, "mp3-16k": low_bitrate_mp3}


PAIRS = (
    ("joe", "joe-high"), ("joe", "joe-low"), ("joe", "espeak-us"), ("joe", "espeak-rp"),
    ("espeak-us", "joe"), ("espeak-rp", "joe-high"), ("joe-high", "joe-low"),
)  # fmt: skip
DEGRADED_PAIRS = (
    ("joe-phone", "joe-high"), ("joe-noisy-phone", "joe-high"), ("joe-mp3-16k", "joe-high"),
    ("joe", "joe-high-phone"), ("joe", "joe-high-noisy-phone"), ("joe", "joe-high-mp3-16k"),
    ("joe-phone", "joe-high-phone"),
)  # fmt: skip


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


async def run_pairs(conversion: ConversionService, voices: dict[str, Voice], out: Path | None) -> list[dict]:
    embed = speaker_embedder()
    print(
        "| source -> target | target F0 | output F0 | F0 error | cos(target) | cos(source) | WER src/out | RTF | pass |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for source_name, target_name in (*PAIRS, *DEGRADED_PAIRS):
        source, target = voices[source_name], voices[target_name]
        output, rtf = await convert(conversion, source.source, target.reference)
        target_f0 = extract_voice_features(target.reference).f0_median_hz
        output_f0 = extract_voice_features(output).f0_median_hz
        error = abs(output_f0 - target_f0) / target_f0
        peak_dbfs = 20 * float(np.log10(np.max(np.abs(output.samples))))
        full_scale = int(np.sum(np.abs(output.samples) >= 1.0))
        # Intelligibility kept: the recognizer's word errors on the output against those on the source itself.
        source_wer = word_error_rate([SOURCE_TEXT], [transcribe(source.source.samples, source.source.sample_rate)])
        output_wer = word_error_rate([SOURCE_TEXT], [transcribe(output.samples, output.sample_rate)])
        result = {
            "source": source_name, "target": target_name, "target_f0_hz": round(target_f0, 1),
            "source_wer": round(source_wer, 3), "output_wer": round(output_wer, 3),
            "output_f0_hz": round(output_f0, 1), "f0_error": round(error, 4), "rtf": round(rtf, 3),
            "peak_dbfs": round(peak_dbfs, 2), "samples_at_full_scale": full_scale,
            "source_bandwidth_hz": round(extract_voice_features(source.source).bandwidth_hz),
            "target_bandwidth_hz": round(extract_voice_features(target.reference).bandwidth_hz),
        }  # fmt: skip
        passed = error <= 0.10 and full_scale == 0
        cosines = "| n/a | n/a "
        if embed is not None:
            out_embedding = embed(output)
            to_target = float(np.dot(out_embedding, embed(target.reference)))
            to_source = float(np.dot(out_embedding, embed(source.source)))
            passed = passed and to_target > to_source
            result |= {"cos_target": round(to_target, 3), "cos_source": round(to_source, 3)}
            cosines = f"| {to_target:.3f} | {to_source:.3f} "
        results.append({**result, "pass": passed})
        print(
            f"| {source_name} -> {target_name} | {target_f0:.0f} Hz | {output_f0:.0f} Hz "
            f"| {error:.1%} {cosines}| {source_wer:.2f}/{output_wer:.2f} | {rtf:.3f} | {'yes' if passed else 'no'} |"
        )
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for label, audio in (("out", output), ("src", source.source), ("ref", target.reference)):
                (out / f"{source_name}_to_{target_name}.{label}.wav").write_bytes(wav(audio))
    return results


def summarize(rounds: list[list[dict]]) -> list[dict]:
    """Each pair over the rounds (joe samples its durations and noise, so each round's recordings differ): the
    median of every figure, the F0 error's range, and whether the pair passed in the median round."""
    summary = []
    for per_round in zip(*rounds, strict=True):
        numeric = [name for name, value in per_round[0].items() if isinstance(value, float | int)
                   and not isinstance(value, bool)]  # fmt: skip
        medians = {name: round(statistics.median(result[name] for result in per_round), 4) for name in numeric}
        errors = [result["f0_error"] for result in per_round]
        passed = sorted(per_round, key=lambda result: result["f0_error"])[len(per_round) // 2]["pass"]
        summary.append({"source": per_round[0]["source"], "target": per_round[0]["target"], **medians,
                        "f0_error_range": [min(errors), max(errors)], "pass": passed})  # fmt: skip
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Write sources, references and outputs as WAV here.")
    parser.add_argument("-o", "--output", type=Path, help="Write the JSON report here.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds, each with newly spoken recordings.")
    parser.add_argument("--envelope-strength", type=float, default=1.0)
    args = parser.parse_args()
    load_start = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            warmup=False, espeak_voices=False, data_dir=Path(data_dir),
            conversion_envelope_strength=args.envelope_strength,
        )  # fmt: skip
        speech = build_speech_service(settings)
        conversion = build_conversion_service(speech, settings)
        try:
            for _ in range(args.rounds):
                rounds.append(asyncio.run(run_pairs(conversion, build_voices(), args.out)))
        finally:
            asyncio.run(conversion.close())
            speech.close()
    if args.output is not None:
        report = {
            **report_header("conversion_quality", [SOURCE_TEXT, REFERENCE_TEXT], (load_start, os.getloadavg())),
            "setup": {
                "envelope_strength": args.envelope_strength,
                "degradations": list(DAMAGES),
                "speaker_similarity": speaker_embedder() is not None,
                "rounds": args.rounds,
            },
            "pairs": summarize(rounds),
            "rounds": rounds,
        }
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
