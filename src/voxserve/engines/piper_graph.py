"""Piper's ONNX graph, patched to also output each phoneme id's duration in frames. The model gives no per-item
length in a padded batch (trimming by energy would cut quiet endings), and word timestamps need each phoneme's
place in the audio. VITS rounds durations up with a Ceil node; its output (zero for padding) is each id's length
in frames, and summed per item, the item's length."""

from __future__ import annotations

from pathlib import Path

from voxserve.errors import ConfigError


def with_duration_output(model_path: Path) -> tuple[bytes, str | None]:
    """The serialized model with the durations as an extra output, and that output's name; `None` (and the model
    as it is) for a graph without a duration node."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(model_path))
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError, DecodeError) as exc:
        raise ConfigError(f"cannot load Piper model {model_path}: {exc}") from exc
    ceil = next((node for node in model.graph.node if node.op_type == "Ceil"), None)
    if ceil is None:
        return model.SerializeToString(), None
    name = ceil.output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), name
