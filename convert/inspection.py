"""What a loaded Keras model is: one image input, one output, a head we can linearise, a backbone.

Works on Keras 3 and ``tf_keras`` models alike (layers are recognised by class name and
config, not by ``isinstance`` against one library).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convert.head import LinearHead, linear_head
from convert.loading import LoadedModel
from models.errors import UsageError
from models.registry import BACKBONE_NAMES, match_backbone

#: Layer names only found in one keras.applications backbone, for bases built inline
#: (``MobileNetV2(input_tensor=...)``) rather than nested as one layer.
_FINGERPRINTS = {
    "mobilenetv2": ("block_16_project", "Conv_1_bn"),
    "resnet50": ("conv5_block3_out", "conv4_block6_out"),
    "efficientnetb0": ("block7a_project_conv", "top_conv"),
}
_FINAL_ACTIVATIONS = frozenset({"sigmoid", "softmax"})


@dataclass(frozen=True)
class ModelStructure:
    """The parts of a model conversion needs."""

    #: (height, width) from the model's input, or None when the model takes any size.
    input_size: tuple[int, int] | None
    input_dtype: str
    #: The tensor entering the last Dense (the features the head maps to a logit).
    features: Any
    backbone: str
    dense_name: str
    kernel: np.ndarray
    bias: np.ndarray | None
    activation: str

    def head(self, positive_index: int) -> LinearHead:
        """The positive-class logit for the class at ``positive_index`` in the model's order."""
        return linear_head(self.kernel, self.bias, self.activation, positive_index, self.dense_name)


def inspect_model(loaded: LoadedModel) -> ModelStructure:
    """Check the model is a one-image-in, one-binary-output classifier and linearise its head."""
    model = loaded.model
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        raise UsageError(
            f"{loaded.path}: the model has no defined input (a Sequential built without an"
            " input shape?): build it with keras.Input((height, width, 3)) and save it again"
        )
    if len(inputs) != 1:
        raise UsageError(
            f"{loaded.path}: the model has {len(inputs)} inputs; genderscore converts models"
            " with one image input (batch, height, width, 3)"
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        hint = (
            " (channels first? genderscore needs channels last)"
            if len(shape) == 4 and shape[1] == 3
            else ""
        )
        raise UsageError(
            f"{loaded.path}: the model input has shape {_fmt_shape(shape)}, not an image batch"
            f" (batch, height, width, 3){hint}"
        )
    input_size = None if shape[1] is None or shape[2] is None else (int(shape[1]), int(shape[2]))
    outputs = list(model.outputs)
    if len(outputs) != 1:
        names = ", ".join(_producer(o).name for o in outputs)
        raise UsageError(
            f"{loaded.path}: the model has {len(outputs)} outputs ({names}); genderscore"
            " converts models with one output, P(class) from Dense(1, sigmoid) or"
            " Dense(2, softmax)"
        )
    out_shape = tuple(outputs[0].shape)
    if len(out_shape) != 2 or out_shape[1] not in (1, 2):
        raise UsageError(
            f"{loaded.path}: the model output has shape {_fmt_shape(out_shape)}; a binary"
            " classifier outputs (batch, 1) from a sigmoid or (batch, 2) from a softmax"
        )
    dense, activation = _final_dense(_producer(outputs[0]))
    kernel, *rest = dense.get_weights()
    bias = rest[0] if rest else None
    linear_head(kernel, bias, activation, 1, dense.name)  # refuse unsupported heads now
    return ModelStructure(
        input_size=input_size,
        input_dtype=str(getattr(inputs[0].dtype, "name", inputs[0].dtype)),
        features=dense.input,
        backbone=detect_backbone(model),
        dense_name=dense.name,
        kernel=np.asarray(kernel),
        bias=None if bias is None else np.asarray(bias),
        activation=activation,
    )


def detect_backbone(model: Any) -> str:
    """The registry backbone inside ``model`` (nested base or inlined layers), else ``"unknown"``."""
    names = [layer.name for layer in _walk_layers(model)]
    for name in [model.name, *names]:
        found = match_backbone(name)
        if found is not None:
            return found.name
    present = set(names)
    for backbone in BACKBONE_NAMES:
        if all(marker in present for marker in _FINGERPRINTS.get(backbone, ("",))):
            return backbone
    return "unknown"


def _final_dense(layer: Any) -> tuple[Any, str]:
    """The last Dense layer and the activation applied to its output."""
    kind = type(layer).__name__
    if kind == "Dense":
        return layer, _activation_name(layer)
    if kind in ("Activation", "Softmax"):
        activation = "softmax" if kind == "Softmax" else _activation_name(layer)
        if activation not in _FINAL_ACTIVATIONS:
            raise UsageError(
                f"the model ends in an Activation({activation!r}) layer; expected sigmoid or softmax"
            )
        if kind == "Softmax" and layer.get_config().get("axis", -1) not in (-1, 1):
            raise UsageError("the model's final Softmax is not over the class axis")
        previous = _producer(layer.input)
        if type(previous).__name__ != "Dense" or _activation_name(previous) != "linear":
            raise UsageError(
                f"the model's final {kind} follows a {type(previous).__name__} layer"
                f" ({previous.name}); expected a linear Dense layer before it"
            )
        return previous, activation
    raise UsageError(
        f"the model's output comes from a {kind} layer ({layer.name}); genderscore converts"
        " heads ending in Dense(1, sigmoid) or Dense(2, softmax)"
    )


def _activation_name(layer: Any) -> str:
    activation = layer.get_config().get("activation", "linear")
    if isinstance(activation, dict):  # a serialized custom or registered activation
        activation = activation.get("config", {}).get("name") or activation.get("class_name")
    return str(activation)


def _producer(tensor: Any) -> Any:
    """The layer that produced a symbolic Keras tensor (Keras 3 and tf_keras alike)."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise UsageError("cannot trace the model's graph: is it a subclassed model?")
    return history[0]


def _walk_layers(model: Any) -> list[Any]:
    out, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        out.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return out


def _fmt_shape(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"
