"""Piper's ONNX graph, patched to also output each phoneme id's duration in frames. The model gives no per-item
length in a padded batch (trimming by energy would cut quiet endings), and word timestamps need each phoneme's
place in the audio. VITS rounds durations up with a Ceil node; its output (zero for padding) is each id's length
in frames, and summed per item, the item's length."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from voxserve.errors import ConfigError


@contextmanager
def with_duration_output(model_path: Path) -> Iterator[tuple[Path, str | None]]:
    """A model file with the durations as an extra output, and that output's name; for a graph without a
    duration node, the model as it is and `None`. The patched model is a temporary file, gone after the `with`:
    onnxruntime keeps a model given as bytes in memory for the session's life (60 MB more per voice, measured)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(model_path))
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError, DecodeError) as exc:
        raise ConfigError(f"cannot load Piper model {model_path}: {exc}") from exc
    ceil = next((node for node in model.graph.node if node.op_type == "Ceil"), None)
    if ceil is None:
        yield model_path, None
        return
    name = ceil.output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(prefix="voxserve-piper-") as directory:
        patched = Path(directory) / model_path.name
        onnx.save(model, str(patched))
        del model
        yield patched, name


@dataclass(frozen=True, slots=True)
class TwoStages:
    """A Piper model as two graphs: `text` (ids -> latent frames, and each id's duration) and `decoder` (latent
    frames -> audio, `hop` samples a frame). `decoder_inputs` are the decoder graph's inputs, the latent first
    (a multi-speaker voice's decoder also takes its speaker id)."""

    text: Path
    decoder: Path
    latent: str
    durations: str
    decoder_inputs: tuple[str, ...]
    hop: int


@contextmanager
def two_stages(model_path: Path) -> Iterator[TwoStages]:
    """The model split where VITS hands its latent to the HiFi-GAN decoder (the `/dec/` nodes of Piper's export),
    as temporary files gone after the `with`. Decoding the latent whole gives the model's own audio exactly; the
    decoder is convolutional, so it can also be run on windows of the latent (`piper_decoder`)."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(model_path))
    graph = model.graph
    constants = {initializer.name for initializer in graph.initializer}
    decoder_nodes = [node for node in graph.node if node.name.startswith(_DECODER_PREFIX)]
    made_outside = {
        output for node in graph.node if not node.name.startswith(_DECODER_PREFIX) for output in node.output
    }
    latents = sorted({name for node in decoder_nodes for name in node.input if name in made_outside - constants})
    ceil = next((node for node in graph.node if node.op_type == "Ceil"), None)
    if len(latents) != 1 or ceil is None:
        raise ConfigError(f"{model_path.name}: no single latent between text stage and decoder ({latents})")
    latent, durations = latents[0], ceil.output[0]
    extractor = Extractor(model)
    inputs = [value.name for value in graph.input]
    text = extractor.extract_model(inputs, [latent, durations])
    speaker = [name for name in inputs if name == "sid" and _reaches(graph, name, decoder_nodes)]
    decoder = extractor.extract_model([latent, *speaker], [output.name for output in graph.output])
    hop = math.prod(
        attribute.ints[0] for node in decoder_nodes if node.op_type == "ConvTranspose"
        for attribute in node.attribute if attribute.name == "strides"
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="voxserve-piper-stages-") as directory:
        stages = TwoStages(Path(directory) / "text.onnx", Path(directory) / "decoder.onnx", latent, durations,
                           (latent, *speaker), hop)  # fmt: skip
        onnx.save(text, str(stages.text))
        onnx.save(decoder, str(stages.decoder))
        del model, text, decoder
        yield stages


_DECODER_PREFIX = "/dec/"


def _reaches(graph: object, name: str, nodes: list[object]) -> bool:
    """Whether graph input `name` feeds any of `nodes`, through any path."""
    consumers: dict[str, list[object]] = {}
    for node in graph.node:  # type: ignore[attr-defined]
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    targets, seen, frontier = {id(node) for node in nodes}, set(), [name]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if id(node) in targets:
                return True
            if id(node) not in seen:
                seen.add(id(node))
                frontier.extend(node.output)  # type: ignore[attr-defined]
    return False
