"""Piper's ONNX graph, patched to also output each phoneme's duration in frames: the model gives no per-item
length in a padded batch, and trimming by energy would cut quiet endings. VITS rounds durations up with a Ceil
node; its output (zero for padding) summed per item is that item's length in frames."""

from __future__ import annotations

from pathlib import Path

from voxserve.errors import ConfigError


def with_duration_output(model_path: Path) -> tuple[bytes, str]:
    """The serialized model with the durations as an extra output, and that output's name."""
    import onnx

    try:
        model = onnx.load(str(model_path))
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError) as exc:
        raise ConfigError(f"cannot read Piper model {model_path}: {exc}") from exc
    ceil = next((node for node in model.graph.node if node.op_type == "Ceil"), None)
    if ceil is None:
        raise ConfigError(f"{model_path} has no duration (Ceil) node, so its batches cannot be trimmed exactly")
    name = ceil.output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), name
