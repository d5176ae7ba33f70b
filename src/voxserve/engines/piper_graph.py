"""Piper's ONNX graph, patched to also output each phoneme id's duration in frames. The model gives no per-item
length in a padded batch (trimming by energy would cut quiet endings), and word timestamps need each phoneme's
place in the audio. VITS rounds durations up with a Ceil node; its output (zero for padding) is each id's length
in frames, and summed per item, the item's length."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
