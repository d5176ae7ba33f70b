"""Piper (VITS) voices on onnxruntime: the bundled `en_US-joe-medium` and any `.onnx` + `.onnx.json` pair."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from voxserve.engines.base import EngineProfile, PreparedSegment, SegmentAudio
from voxserve.engines.piper_decoder import FramedSynthesis, Graph, SegmentWindows, WindowOptions, window_bounds
from voxserve.engines.piper_graph import PiperStages, Stage, piper_stages
from voxserve.engines.piper_voice import PiperVoiceConfig, PiperVoices, align
from voxserve.errors import ConfigError, EngineError
from voxserve.frontend.phonemize import Phonemizer
from voxserve.types import SynthesisParams, VoiceInfo


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How onnxruntime runs a model: threads per call under load, threads for a call that runs alone
    (`solo_intra_op_threads`; a second session is made when it is larger), whether idle threads spin, and
    whether padded batches are run (each item is trimmed by its durations, which the graph always outputs)."""

    intra_op_threads: int = 1
    solo_intra_op_threads: int = 1
    allow_spinning: bool = False
    batching: bool = False

    def build(self, threads: int, *, memory_pattern: bool, profile_prefix: Path | None = None) -> ort.SessionOptions:
        """`profile_prefix` turns onnxruntime's profiler on, writing `<prefix>_<time>.json`.
        `memory_pattern` plans one block per input shape: ~19% faster for a lone 2-thread call, but every
        concurrent call then holds its whole peak at once (measured on the corpus: 913 vs 672 MB at 2 x 1)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_mem_pattern = memory_pattern
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = True
        _register_shared_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        # Spinning threads steal the cores other workers need; only a lone worker may spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        return options


@functools.cache
def _register_shared_cpu_arena() -> None:
    """One CPU arena for every session in the process, instead of one per session: each arena keeps the largest
    working set it has seen, so the lone-call and the shared session held two peaks at once (measured in-process
    on the corpus at 2 x 1 plus solo calls: peak 545 -> 441-467 MB, same speed). Growth stays power-of-two:
    growing by the requested size fragmented the arena and raised the peak (589-661 MB)."""
    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg({"arena_extend_strategy": 0}))


@functools.cache
def _shrink_arena_options() -> ort.RunOptions:
    """A run that frees the arena regions no call is using when it ends: measured after three concurrent calls
    of 130 characters, RSS went from 596 to 314 MB (the next call then takes its regions again)."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def _load_session(model: Path, options: ort.SessionOptions, name: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises pybind types with no common base
        raise ConfigError(f"cannot load Piper model {name}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _Graphs:
    """One set of sessions for the stages of a model (the text stage alone for a model kept whole)."""

    text: ort.InferenceSession
    flow: ort.InferenceSession | None
    decoder: ort.InferenceSession | None

    def each(self) -> list[ort.InferenceSession]:
        return [session for session in (self.text, self.flow, self.decoder) if session is not None]


class _Sessions:
    """The sessions every worker shares and those for calls that run alone (the same object when a lone call gets
    no more threads), with a count of calls in flight so a profiling pair is ended only once idle."""

    def __init__(self, shared: _Graphs, solo: _Graphs) -> None:
        self.shared = shared
        self.solo = solo
        self._in_flight = 0
        self._idle = threading.Condition()

    @contextmanager
    def use(self, *, solo: bool) -> Iterator[_Graphs]:
        with self._idle:
            self._in_flight += 1
        try:
            yield self.solo if solo else self.shared
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def wait_idle(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0)

    def distinct(self) -> list[tuple[str, _Graphs]]:
        return [("shared", self.shared)] + ([("solo", self.solo)] if self.solo is not self.shared else [])


class PiperModel:
    """One Piper `.onnx` file and its config, split into its three stages (text, flow, decoder; `piper_graph`).
    One set of sessions is shared by every worker and speaker; a second one, with more threads, serves calls that
    run alone. While profiling, a profiling pair stands in for both."""

    def __init__(self, model_path: Path, options: SessionOptions, windows: WindowOptions | None = None) -> None:
        self.config = PiperVoiceConfig(model_path)
        self._path = model_path
        self._options = options
        self._windows = windows or WindowOptions()
        self.name = self.config.name
        with piper_stages(model_path) as stages:
            if options.batching and stages.durations is None:
                raise ConfigError(f"{model_path} has no duration (Ceil) node, so its batches cannot be trimmed exactly")
            self._stages = stages
            self._plain = self._load_sessions(stages)
        self._sessions = self._plain
        self._takes_speaker = "sid" in stages.text.inputs
        outputs = stages.text.outputs
        self._flow_sides = [outputs.index(name) for name in stages.flow.inputs[1:]] if stages.flow else []
        self._decoder_sides = [outputs.index(name) for name in stages.decoder.inputs[1:]] if stages.decoder else []

    def _load_sessions(self, stages: PiperStages, profile_dir: Path | None = None) -> _Sessions:
        options = self._options

        def load(threads: int, memory_pattern: bool, role: str) -> _Graphs:
            def graph(stage: Stage, name: str) -> ort.InferenceSession:
                prefix = None if profile_dir is None else profile_dir / f"onnxruntime-{self.name}-{name}-{role}"
                built = options.build(threads, memory_pattern=memory_pattern, profile_prefix=prefix)
                return _load_session(stage.path, built, self.name)

            flow = None if stages.flow is None else graph(stages.flow, "flow")
            decoder = None if stages.decoder is None else graph(stages.decoder, "decoder")
            return _Graphs(graph(stages.text, "text"), flow, decoder)

        shared = load(options.intra_op_threads, False, "shared")
        if options.solo_intra_op_threads <= options.intra_op_threads:
            return _Sessions(shared, shared)
        return _Sessions(shared, load(options.solo_intra_op_threads, True, "solo"))

    @property
    def hop(self) -> int:
        return self._stages.hop

    def start_profiling(self, directory: Path) -> None:
        with piper_stages(self._path) as stages:
            self._sessions = self._load_sessions(stages, directory)

    def stop_profiling(self) -> list[EngineProfile]:
        profiling, self._sessions = self._sessions, self._plain
        if profiling is self._plain:
            return []
        profiling.wait_idle()
        return [
            EngineProfile(Path(session.end_profiling()), session.get_profiling_start_time_ns())
            for _, graphs in profiling.distinct()
            for session in graphs.each()
        ]

    def runtime_info(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sample_rate": self.config.sample_rate,
            "speakers": len(self.config.speaker_ids) or 1,
            "stages": ["text", "flow", "decoder"] if self._stages.split else ["whole"],
            "windows": {
                "first_frames": self._windows.first_frames,
                "longest_frames": self._windows.longest_frames,
                "growth": self._windows.growth,
                "hop_samples": self.hop,
            },
            "sessions": {
                role: {"providers": graphs.text.get_providers(), "threads": threads}
                for (role, graphs), threads in zip(
                    self._plain.distinct(),
                    (self._options.intra_op_threads, self._options.solo_intra_op_threads),
                    strict=False,
                )
            },
        }

    def release_memory(self, segment: PreparedSegment) -> None:
        """One short call (`segment`) that ends by handing the CPU arena's unused regions back to the system.
        The arena is shared by every session in the process; any session's call shrinks it."""
        self.synthesize([segment], run_options=_shrink_arena_options())

    def synthesize(
        self, segments: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False,
        run_options: ort.RunOptions | None = None,
    ) -> list[SegmentAudio]:  # fmt: skip
        """One call for all `segments` (same voice and scales; more than one needs `batching`): ids are padded
        to the longest, and each output is cut to its own length from the predicted durations. A lone `windowed`
        segment gets its first window now and the rest as a continuation."""
        longest = max(len(segment.phoneme_ids) for segment in segments)
        pad = self.config.pad_id
        scales = self.config.scales(segments[0].params)
        inputs = {
            "input": np.array([[*s.phoneme_ids, *[pad] * (longest - len(s.phoneme_ids))] for s in segments], np.int64),
            "input_lengths": np.array([len(segment.phoneme_ids) for segment in segments], dtype=np.int64),
            "scales": np.array([scales.noise, scales.length, scales.noise_w], dtype=np.float32),
        }
        if self._takes_speaker:
            inputs["sid"] = np.array([self.config.speaker_id(segment.params) for segment in segments], np.int64)
        with self._calling(), self._sessions.use(solo=solo) as graphs:
            text = graphs.text.run(None, inputs, run_options)
        if not self._stages.split:
            return self._whole(segments, text)
        framed = FramedSynthesis(
            text[0], [text[index] for index in self._flow_sides], [text[index] for index in self._decoder_sides],
            [(0, text[0].shape[-1])], self.hop,
        )  # fmt: skip
        frames = text[-1].reshape(len(segments), -1).astype(np.int64)
        if windowed and len(segments) == 1:
            windows = self._windows
            framed.bounds = window_bounds(framed.frames, windows.first_frames, windows.longest_frames, windows.growth)
            alignment = align(segments[0], frames[0, : len(segments[0].phoneme_ids)] * self.hop)
            decode = functools.partial(self.decode_window, run_options=run_options)
            return [SegmentWindows.first(framed, self.config.sample_rate, decode, solo=solo, alignment=alignment)]
        audio = self.decode_window(framed, solo, run_options).reshape(len(segments), -1)
        return _trimmed(segments, audio, frames, self.hop)

    def _whole(self, segments: Sequence[PreparedSegment], outputs: list[np.ndarray]) -> list[SegmentAudio]:
        """The audio of a model kept whole: its first output, trimmed by its durations when it gives them."""
        audio = outputs[0].reshape(len(segments), -1).astype(np.float32, copy=False)
        if self._stages.durations is None:
            return [SegmentAudio(np.ascontiguousarray(audio[0]))]
        frames = outputs[-1].reshape(len(segments), -1).astype(np.int64)
        return _trimmed(segments, audio, frames, audio.shape[1] // max(int(frames.sum(axis=1).max()), 1))

    def decode_window(
        self, framed: FramedSynthesis, solo: bool, run_options: ort.RunOptions | None = None
    ) -> np.ndarray:
        """`framed`'s next window through the flow and the decoder."""
        with self._calling(), self._sessions.use(solo=solo) as graphs:
            flow, decoder = graphs.flow, graphs.decoder
            assert flow is not None, "only a split model decodes windows"
            assert decoder is not None, "only a split model decodes windows"
            return framed.next_window(_graph(flow, run_options), _graph(decoder, run_options))

    @contextmanager
    def _calling(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # onnxruntime raises pybind types with no common base
            raise EngineError(f"Piper voice {self.name} failed: {exc}") from exc


def _trimmed(
    segments: Sequence[PreparedSegment], audio: np.ndarray, frames: np.ndarray, hop: int
) -> list[SegmentAudio]:
    """Each item of a padded batch's `audio` cut to its own length (its `frames`, `hop` samples each), aligned."""
    return [
        SegmentAudio(
            np.ascontiguousarray(audio[index, : frames[index].sum() * hop], dtype=np.float32),
            align(segment, frames[index, : len(segment.phoneme_ids)] * hop),
        )
        for index, segment in enumerate(segments)
    ]


def _graph(session: ort.InferenceSession, run_options: ort.RunOptions | None) -> Graph:
    names = [value.name for value in session.get_inputs()]
    return lambda arrays: session.run(None, dict(zip(names, arrays, strict=True)), run_options)[0]


class PiperEngine:
    """Every loaded Piper model. It batches only when built with `batching` (the scheduler's `max_batch_size`
    above 1): padded VITS batches measured ~2x slower than sequential calls on CPU, so by default each segment
    is one onnxruntime call."""

    name = "piper"
    supports_instructions = False
    supports_timestamps = True
    supports_windows = True

    def __init__(
        self, model_paths: Sequence[Path], phonemizer: Phonemizer, options: SessionOptions,
        windows: WindowOptions | None = None,
    ) -> None:  # fmt: skip
        self.supports_batching = options.batching
        models = [PiperModel(path, options, windows) for path in model_paths]
        self._voices = PiperVoices(models, self.name, phonemizer)
        self._models = self._voices.models

    def voices(self) -> list[VoiceInfo]:
        return self._voices.voices()

    def prepare(self, params: SynthesisParams) -> PreparedSegment:
        return self._voices.prepare(params)

    def run(
        self, batch: Sequence[PreparedSegment], *, solo: bool = False, windowed: bool = False
    ) -> list[SegmentAudio]:
        def synthesize(model: PiperModel, segments: list[PreparedSegment]) -> list[SegmentAudio]:
            if self.supports_batching:
                return model.synthesize(segments, solo=solo, windowed=windowed)
            return [model.synthesize([segment], solo=solo, windowed=windowed)[0] for segment in segments]

        return self._voices.run(batch, synthesize)

    def warmup(self) -> None:
        for model in self._models:
            warm = self._voices.warmup_segment(model)
            for solo in (False, True):
                self.run([warm] * (2 if self.supports_batching else 1), solo=solo)
                audio = self.run([warm], solo=solo, windowed=True)[0]
                while audio.rest is not None:
                    audio = audio.rest.run(solo=solo)

    def release_memory(self) -> None:
        for model in self._models:
            model.release_memory(self._voices.warmup_segment(model))

    def runtime_info(self) -> dict[str, object]:
        return {
            "runtime": f"onnxruntime {ort.__version__}",
            "available_providers": ort.get_available_providers(),
            "batching": self.supports_batching,
            "models": [model.runtime_info() for model in self._models],
        }

    def start_profiling(self, directory: Path) -> None:
        for model in self._models:
            model.start_profiling(directory)

    def stop_profiling(self) -> list[EngineProfile]:
        return [profile for model in self._models for profile in model.stop_profiling()]
