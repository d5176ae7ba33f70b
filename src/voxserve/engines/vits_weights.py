"""A Piper voice's weights read out of its `.onnx` file, keyed by the module path of the layer that uses them.

Piper exports VITS with weight norm folded in, so some weights carry generated names (`onnx::Conv_8168`); the
ONNX node that consumes a weight is named after its module (`/flow/flows.6/enc/in_layers.0/Conv`), so weights are
found through their nodes, not their names. Each convolution keeps its stride, padding, dilation and groups from
the graph, which covers every Piper quality level (x_low to high) without a table of hyperparameters."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from voxserve.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ConvSpec:
    """How one convolution is applied; `transposed` marks the decoder's upsampling layers."""

    stride: int
    padding: int
    dilation: int
    groups: int
    transposed: bool = False


@dataclass(frozen=True, slots=True)
class VitsWeights:
    """Every tensor the VITS module needs (`"dec.ups.0.weight"`, `"enc_p.emb.weight"`, ...) and every
    convolution's spec by module path (`"dec.ups.0"`)."""

    tensors: dict[str, np.ndarray]
    convs: dict[str, ConvSpec]

    def has(self, prefix: str) -> bool:
        return any(name.startswith(prefix) for name in self.tensors)

    def count(self, prefix: str) -> int:
        """How many numbered children `prefix` has: `count("dec.ups.")` is the number of upsampling layers."""
        return len(self.indices(prefix))

    def indices(self, prefix: str) -> list[int]:
        """The numbers of `prefix`'s children, ascending (the duration predictor's flows skip some)."""
        found = {name[len(prefix) :].split(".")[0] for name in self.tensors if name.startswith(prefix)}
        return sorted(int(index) for index in found if index.isdigit())

    def tensor(self, name: str) -> np.ndarray:
        try:
            return self.tensors[name]
        except KeyError:
            raise ConfigError(f"the Piper model has no weight {name!r}; is it a VITS voice?") from None

    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.tensors.values())

    def save(self, path: Path, *, dtype: type[np.floating] = np.float32) -> None:
        """An `.npz` another machine can load without the `.onnx` (float16 halves it, for carrying)."""
        specs = json.dumps({name: asdict(spec) for name, spec in self.convs.items()})
        arrays = {name: array.astype(dtype) for name, array in self.tensors.items()}
        np.savez(path, __convs__=np.array(specs), **arrays)

    @classmethod
    def load(cls, path: Path) -> VitsWeights:
        """Weights written by `save`, as float32."""
        with np.load(path) as saved:
            specs = json.loads(str(saved["__convs__"]))
            tensors = {name: saved[name].astype(np.float32) for name in saved.files if name != "__convs__"}
        return cls(tensors, {name: ConvSpec(**spec) for name, spec in specs.items()})


def read_vits_weights(model_path: Path) -> VitsWeights:
    """Read the weights of a Piper `.onnx` file (any VITS voice Piper exports)."""
    import onnx
    from onnx import helper, numpy_helper

    try:
        model = onnx.load(str(model_path))
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError) as exc:
        raise ConfigError(f"cannot read Piper model {model_path}: {exc}") from exc
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    tensors: dict[str, np.ndarray] = {}
    convs: dict[str, ConvSpec] = {}
    for node in model.graph.node:
        path = _module_path(node.name)
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in constants:
            attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
            pads = attributes.get("pads", [0, 0])
            if pads[0] != pads[-1]:
                raise ConfigError(f"{model_path}: convolution {path} pads unevenly ({pads}); not a Piper export")
            convs[path] = ConvSpec(
                stride=attributes.get("strides", [1])[0],
                padding=pads[0],
                dilation=attributes.get("dilations", [1])[0],
                groups=attributes.get("group", 1),
                transposed=node.op_type == "ConvTranspose",
            )
            tensors[f"{path}.weight"] = constants[node.input[1]]
            if len(node.input) > 2 and node.input[2] in constants:
                tensors[f"{path}.bias"] = constants[node.input[2]]
        elif node.op_type == "Gather" and node.input[0] in constants and path.endswith(("emb", "emb_g")):
            tensors[f"{path}.weight"] = constants[node.input[0]]
    # Named parameters that are not convolution weights: attention's relative embeddings, layer norms, and the
    # duration predictor's affine flow (its scale is stored already exponentiated, as the graph uses it).
    for name, array in constants.items():
        if name.endswith(("emb_rel_k", "emb_rel_v", ".gamma", ".beta")) or name.startswith("dp.flows.0."):
            tensors[name] = array
    exp_scale = "/dp/flows.0/Exp_output_0"
    if exp_scale in constants:
        tensors["dp.flows.0.scale"] = constants[exp_scale]
    tensors = {name: np.array(array, dtype=np.float32) for name, array in tensors.items()}
    if "enc_p.emb.weight" not in tensors or "dec.conv_post.weight" not in tensors:
        raise ConfigError(f"{model_path} does not look like a Piper VITS export (no text embedding or decoder)")
    return VitsWeights(tensors, convs)


def _module_path(node_name: str) -> str:
    """`/flow/flows.6/enc/in_layers.0/Conv` -> `flow.flows.6.enc.in_layers.0`."""
    return ".".join(node_name.strip("/").split("/")[:-1])
