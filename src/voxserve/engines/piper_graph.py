"""Piper's ONNX graph, split into the stages of VITS and patched to also output each phoneme id's duration in
frames. The model gives no per-item length in a padded batch (trimming by energy would cut quiet endings), and
word timestamps need each phoneme's place in the audio. VITS rounds durations up with a Ceil node; its output
(zero for padding) is each id's length in frames, and summed per item, the item's length.

The split files are temporary, gone after the `with`: onnxruntime keeps a model given as bytes in memory for the
session's life (60 MB more per voice, measured)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from voxserve.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Stage:
    """One graph of a split model: its file, and the tensors it takes and gives, by name."""

    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PiperStages:
    """A Piper model as three graphs. `text` takes the model's inputs and gives the prior sample `z_p` (frames of
    the latent before the flow), what the flow takes beside it (the frame mask; a multi-speaker voice's speaker
    embedding), what the decoder takes beside its latent, and each phoneme id's duration in frames. `flow` maps
    `z_p` to the decoder's latent; `decoder` makes `hop` samples a frame. Flow and decoder are convolutional along
    the frames, so both can run on windows of them (`piper_decoder`); their first input is the framed one.

    A graph that is not shaped like VITS (no prior noise, flow and decoder to find) stays whole: `text` is the
    model, giving its audio (and the durations, when it has a Ceil node), and `flow` and `decoder` are `None`."""

    text: Stage
    flow: Stage | None
    decoder: Stage | None
    durations: str | None
    hop: int

    @property
    def split(self) -> bool:
        return self.flow is not None


@contextmanager
def piper_stages(model_path: Path) -> Iterator[PiperStages]:
    """The model split before its flow and before its HiFi-GAN decoder. The text stage holds everything random
    (the duration noise and the prior's sample); running the three in turn gives the model's own audio exactly."""
    import onnx
    from onnx.utils import Extractor

    model = _load(model_path)
    graph = model.graph
    inputs = [value.name for value in graph.input]
    outputs = [output.name for output in graph.output]
    ceil = next((node for node in graph.node if node.op_type == "Ceil"), None)
    durations = None if ceil is None else ceil.output[0]
    prior = _prior_sample(graph)
    latent = _single_entry(graph, _DECODER_PREFIX)
    hop = math.prod(
        attribute.ints[0] for node in graph.node if node.name.startswith(_DECODER_PREFIX)
        and node.op_type == "ConvTranspose" for attribute in node.attribute if attribute.name == "strides"
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="voxserve-piper-stages-") as directory:
        if durations is None or prior is None or latent is None:
            whole_outputs = [*outputs, *([durations] if durations else [])]
            if durations is not None:
                graph.output.append(onnx.helper.make_tensor_value_info(durations, onnx.TensorProto.FLOAT, None))
            path = Path(directory) / model_path.name
            onnx.save(model, str(path))
            del model
            yield PiperStages(Stage(path, tuple(inputs), tuple(whole_outputs)), None, None, durations, hop)
            return
        flow_sides = _side_inputs(graph, prior, [latent])
        decoder_sides = _side_inputs(graph, latent, outputs)
        text_outputs = [prior, *flow_sides, *[name for name in decoder_sides if name not in flow_sides], durations]
        graphs = {
            "text": (inputs, text_outputs),
            "flow": ([prior, *flow_sides], [latent]),
            "decoder": ([latent, *decoder_sides], outputs),
        }
        extractor = Extractor(model)
        stages = {}
        for name, (given, made) in graphs.items():
            path = Path(directory) / f"{name}.onnx"
            onnx.save(extractor.extract_model(given, made), str(path))
            stages[name] = Stage(path, tuple(given), tuple(made))
        del model, extractor
        yield PiperStages(stages["text"], stages["flow"], stages["decoder"], durations, hop)


_DECODER_PREFIX = "/dec/"
_DURATION_PREFIX = "/dp/"


def _load(model_path: Path) -> object:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(model_path))
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError, DecodeError) as exc:
        raise ConfigError(f"cannot load Piper model {model_path}: {exc}") from exc


def _prior_sample(graph: object) -> str | None:
    """`z_p`: the prior's mean plus its scaled noise, the `Add` nearest the noise drawn outside the duration
    predictor (that noise is drawn per frame; the predictor's, per phoneme)."""
    noises = [node for node in graph.node if node.op_type == "RandomNormalLike"  # type: ignore[attr-defined]
              and not node.name.startswith(_DURATION_PREFIX)]  # fmt: skip
    if len(noises) != 1:
        return None
    consumers = _consumers(graph)
    frontier, seen = list(noises[0].output), set()
    while frontier:
        tensor = frontier.pop(0)
        for node in consumers.get(tensor, []):
            if node.op_type == "Add":
                return node.output[0]
            if id(node) not in seen:
                seen.add(id(node))
                frontier.extend(node.output)
    return None


def _single_entry(graph: object, prefix: str) -> str | None:
    """The one tensor made outside the `prefix` nodes that they take in (constants and graph inputs aside)."""
    inside = [node for node in graph.node if node.name.startswith(prefix)]  # type: ignore[attr-defined]
    made_outside = {output for node in graph.node if not node.name.startswith(prefix) for output in node.output}  # type: ignore[attr-defined]
    entries = {name for node in inside for name in node.input if name in made_outside}
    return entries.pop() if len(entries) == 1 else None


def _side_inputs(graph: object, start: str, ends: list[str]) -> list[str]:
    """What the nodes between tensor `start` and tensors `ends` take besides what `start` leads to: tensors made
    before `start` (a mask, a speaker embedding), in a stable order."""
    constants = {initializer.name for initializer in graph.initializer}  # type: ignore[attr-defined]
    consumers = _consumers(graph)
    downstream, frontier, made = set(), [start], {start}
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if id(node) not in downstream:
                downstream.add(id(node))
                made.update(node.output)
                frontier.extend(node.output)
    producers = {output: node for node in graph.node for output in node.output}  # type: ignore[attr-defined]
    needed, frontier = set(), list(ends)
    while frontier:
        node = producers.get(frontier.pop())
        if node is not None and id(node) in downstream and id(node) not in needed:
            needed.add(id(node))
            frontier.extend(node.input)
    sides = {
        name for node in graph.node if id(node) in needed for name in node.input  # type: ignore[attr-defined]
        if name and name not in made and name not in constants
    }  # fmt: skip
    return sorted(sides)


def _consumers(graph: object) -> dict[str, list[object]]:
    consumers: dict[str, list[object]] = {}
    for node in graph.node:  # type: ignore[attr-defined]
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    return consumers
