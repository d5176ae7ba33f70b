"""Piper voices on PyTorch (`backend = "torch"`): the same `.onnx` voices, on CPU or a CUDA GPU, batched across
requests, with the decoder in float32, float16 or bfloat16.

A batch runs in two steps. The text stage runs every item together (cheap, phoneme rate) and yields each item's
exact length in frames. The acoustic stage then runs items of similar length together, as many per call as the
GPU memory budget allows: longest-first, a call closes when the next item would pad it past `max_length_ratio`
or its padded frames would exceed the budget."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from voxserve.engines.base import Alignment, EngineProfile, PreparedSegment, SegmentAudio
from voxserve.engines.piper_decoder import FramedSynthesis, SegmentWindows, WindowOptions, window_bounds
from voxserve.engines.piper_voice import PiperVoiceConfig, PiperVoices, align
from voxserve.engines.vits_torch import TextStageOutput, Vits
from voxserve.engines.vits_weights import VitsWeights, read_vits_weights
from voxserve.errors import ConfigError, EngineError
from voxserve.types import SynthesisParams, VoiceInfo

if TYPE_CHECKING:
    from voxserve.frontend.phonemize import Phonemizer

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Frames in the calibration run: about 7 s of audio, long enough that per-call overhead does not skew the
# per-frame memory figure.
_CALIBRATION_FRAMES = 600


@dataclass(frozen=True, slots=True)
class TorchOptions:
    """`device`: auto | cpu | cuda | cuda:N (auto picks CUDA when torch sees a GPU). `dtype`: auto (float16 on
    a GPU, float32 on CPU) or a name in `DTYPES`. `memory_fraction`: share of the GPU memory free after loading
    that batches may use, shared by the `concurrent_calls` acoustic calls the scheduler's workers can run at once.
    `threads`: CPU intra-op threads (0 = torch's default)."""

    device: str = "auto"
    dtype: str = "auto"
    memory_fraction: float = 0.8
    threads: int = 0
    max_length_ratio: float = 1.5
    concurrent_calls: int = 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"invalid torch device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch {torch.__version__} sees no CUDA GPU")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def plan_calls(frames: Sequence[int], max_frames: int | None, max_length_ratio: float) -> list[list[int]]:
    """Indices of `frames` split into acoustic-stage calls: longest first; a call closes when the next item is
    shorter than its longest by more than `max_length_ratio`, or when its padded size (items x longest) would
    pass `max_frames` (None: no memory ceiling). An item longer than `max_frames` runs alone."""
    calls: list[list[int]] = []
    for index in sorted(range(len(frames)), key=lambda i: -frames[i]):
        call = calls[-1] if calls else None
        if call is not None:
            longest = frames[call[0]]
            fits = max_frames is None or (len(call) + 1) * longest <= max_frames
            if fits and longest <= frames[index] * max_length_ratio:
                call.append(index)
                continue
        calls.append([index])
    return calls


def frame_budget(
    available_bytes: int, memory_fraction: float, bytes_per_frame: float, concurrent_calls: int = 1
) -> int:
    """Frames one acoustic call may hold (padded frames summed over its items): the memory budget split between
    the calls that can run at once, so together they stay within it."""
    return max(1, int(available_bytes * memory_fraction / max(bytes_per_frame, 1.0) / max(concurrent_calls, 1)))


class TorchPiperModel:
    """One Piper voice as a `Vits` module on `device`, its decoder in `dtype`."""

    def __init__(
        self, config: PiperVoiceConfig, weights: VitsWeights, device: torch.device, dtype: torch.dtype,
        max_length_ratio: float, windows: WindowOptions | None = None,
    ) -> None:  # fmt: skip
        self.windows = windows or WindowOptions()
        self.config = config
        self.name = config.name
        self.device = device
        self.vits = Vits(weights).eval().to(device)
        self.vits.set_decoder_dtype(dtype)
        self.max_length_ratio = max_length_ratio
        self.max_frames: int | None = None

    def synthesize(self, segments: Sequence[PreparedSegment], *, windowed: bool = False) -> list[SegmentAudio]:
        """Audio for segments that share voice and scales, each exactly as long as its durations say. A lone
        `windowed` segment gets its first window now and the rest as a continuation (`piper_decoder`)."""
        scales = self.config.scales(segments[0].params)
        longest = max(len(segment.phoneme_ids) for segment in segments)
        ids = [[*s.phoneme_ids, *[self.config.pad_id] * (longest - len(s.phoneme_ids))] for s in segments]
        speakers = torch.tensor([self.config.speaker_id(s.params) for s in segments], device=self.device)
        outputs: list[SegmentAudio] = [SegmentAudio(np.empty(0, np.float32))] * len(segments)
        with torch.inference_mode():
            text = self.vits.text_stage(
                torch.tensor(ids, device=self.device),
                torch.tensor([len(s.phoneme_ids) for s in segments], device=self.device),
                speakers, noise_w=scales.noise_w, length_scale=scales.length,
            )  # fmt: skip
            frames = text.frames.tolist()
            id_frames = text.durations.cpu().numpy()
            if windowed and len(segments) == 1:
                alignment = align(segments[0], id_frames[0, : len(segments[0].phoneme_ids)] * self.vits.hop)
                return [self._first_window(text, speakers, scales.noise, alignment)]
            for call in plan_calls(frames, self.max_frames, self.max_length_ratio):
                selected = torch.tensor(call, device=self.device)
                audio = self.vits.acoustic_stage(text.select(selected), speakers[selected], noise_scale=scales.noise)
                audio = audio.cpu().numpy()
                for row, index in enumerate(call):
                    outputs[index] = SegmentAudio(
                        np.ascontiguousarray(audio[row, : frames[index] * self.vits.hop]),
                        align(segments[index], id_frames[index, : len(segments[index].phoneme_ids)] * self.vits.hop),
                    )
        return outputs

    def _first_window(
        self, text: TextStageOutput, speakers: torch.Tensor, noise_scale: float, alignment: Alignment | None
    ) -> SegmentAudio:
        prior, mask = self.vits.prior_sample(text, noise_scale=noise_scale)
        speaker = self.vits.speaker(speakers)
        frames = int(text.frames[0])
        bounds = window_bounds(frames, self.windows.first_frames, self.windows.longest_frames, self.windows.growth)
        framed = FramedSynthesis(prior, [mask], [], bounds, self.vits.hop)

        def flow(arrays: Sequence[torch.Tensor]) -> torch.Tensor:
            return self.vits.flow_frames(arrays[0], arrays[1], speaker)

        def decoder(arrays: Sequence[torch.Tensor]) -> torch.Tensor:
            return self.vits.decode_frames(arrays[0], None, speaker)

        def decode(framed: FramedSynthesis, solo: bool) -> np.ndarray:
            with torch.inference_mode():
                return framed.next_window(flow, decoder).cpu().numpy()

        return SegmentWindows.first(framed, self.config.sample_rate, decode, solo=False, alignment=alignment)

    def calibrate(self, warm: PreparedSegment, memory_fraction: float, concurrent_calls: int) -> dict[str, float]:
        """On CUDA, measure the acoustic stage's peak memory per frame and set the frame budget from the memory
        free now (plus what torch holds cached) times `memory_fraction`, split between `concurrent_calls`."""
        repeats = max(1, _CALIBRATION_FRAMES // 60)
        long = PreparedSegment(warm.params, warm.phonemes, warm.phoneme_ids * repeats)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        baseline = torch.cuda.memory_allocated(self.device)
        frames = len(self.synthesize([long])[0].samples) // self.vits.hop
        bytes_per_frame = (torch.cuda.max_memory_allocated(self.device) - baseline) / frames
        free, _ = torch.cuda.mem_get_info(self.device)
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        self.max_frames = frame_budget(free + cached, memory_fraction, bytes_per_frame, concurrent_calls)
        return {"bytes_per_frame": bytes_per_frame, "max_frames_per_call": self.max_frames}

    def runtime_info(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sample_rate": self.config.sample_rate,
            "speakers": len(self.config.speaker_ids) or 1,
            "parameters": sum(parameter.numel() for parameter in self.vits.parameters()),
            "decoder_dtype": str(self.vits.decoder_dtype).removeprefix("torch."),
            "max_frames_per_call": self.max_frames,
        }


def load_piper_voice(model_path: Path) -> tuple[PiperVoiceConfig, VitsWeights]:
    """A Piper voice's config and weights from its `.onnx` + `.onnx.json` pair."""
    return PiperVoiceConfig(model_path), read_vits_weights(model_path)


class TorchPiperEngine:
    """Every Piper voice on PyTorch. Batches always: the scheduler's `max_batch_size` decides how many.
    `voices` are loaded config and weights (`load_piper_voice`, or weights saved with `VitsWeights.save`)."""

    name = "piper-torch"
    supports_batching = True
    supports_windows = True
    supports_instructions = False
    supports_timestamps = True

    def __init__(
        self, voices: Sequence[tuple[PiperVoiceConfig, VitsWeights]], phonemizer: Phonemizer, options: TorchOptions,
        windows: WindowOptions | None = None,
    ) -> None:  # fmt: skip
        self.device = resolve_device(options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        self._options = options
        if self.device.type == "cuda":
            # TF32 rounds convolution inputs to 10 mantissa bits; the flow runs in float32 because the decoder
            # amplifies such errors, so TF32 would undo that (process-wide, like every torch backend flag).
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        elif options.threads:
            torch.set_num_threads(options.threads)
        models = [
            TorchPiperModel(config, weights, self.device, self.dtype, options.max_length_ratio, windows)
            for config, weights in voices
        ]
        self._voices = PiperVoices(models, self.name, phonemizer)
        self._calibration: dict[str, dict[str, float]] = {}

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def voices(self) -> list[VoiceInfo]:
        return self._voices.voices()

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        return self._voices.prepare(params)

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        return self._voices.run(batch, functools.partial(self._synthesize, windowed=windowed))

    def _synthesize(
        self, model: TorchPiperModel, segments: list[PreparedSegment], *, windowed: bool = False
    ) -> list[SegmentAudio]:
        try:
            return model.synthesize(segments, windowed=windowed)
        except torch.cuda.OutOfMemoryError as exc:
            raise EngineError(f"GPU out of memory on a batch of {len(segments)}: {exc}") from exc
        except RuntimeError as exc:
            raise EngineError(f"Piper voice {model.name} failed on {self.device}: {exc}") from exc

    def warmup(self) -> None:
        for model in self._voices.models:
            warm = self._voices.warmup_segment(model)
            self.run([warm, warm])
            if self.on_gpu:
                self._calibration[model.name] = model.calibrate(
                    warm, self._options.memory_fraction, self._options.concurrent_calls
                )
                logger.info("%s on %s: %s", model.name, self.device, self._calibration[model.name])

    def runtime_info(self) -> dict[str, object]:
        info: dict[str, object] = {
            "runtime": f"torch {torch.__version__}",
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "batching": True,
            "models": [model.runtime_info() for model in self._voices.models],
        }
        if self.on_gpu:
            info["gpu"] = torch.cuda.get_device_name(self.device)
            info["memory_fraction"] = self._options.memory_fraction
            info["calibration"] = self._calibration
        else:
            info["threads"] = torch.get_num_threads()
        return info

    def start_profiling(self, directory: Path) -> None:
        """torch's profiler is not wired into captures yet; stage timings and metrics still cover this engine."""

    def stop_profiling(self) -> list[EngineProfile]:
        return []

    def release_memory(self) -> None:
        """CUDA blocks torch's caching allocator holds go back to the device; on CPU torch keeps no pool."""
        if self.on_gpu:
            torch.cuda.empty_cache()
