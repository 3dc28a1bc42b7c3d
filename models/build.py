"""Build a classifier from the registry: a Keras application base and a small head.

The model takes *preprocessed* float input (see :mod:`models.preprocessing`; the mode is
recorded in ``run.json``) and outputs P(positive class) from ``Dense(1, sigmoid)``.
TensorFlow/Keras are imported inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from models.errors import DataError, UsageError
from models.imageio import Size, as_hw
from models.registry import Backbone, HeadSpec, get_backbone, get_head

#: Name of the final Dense(1, sigmoid) layer; :func:`logit_model` reads its kernel.
OUTPUT_LAYER = "prob"
INPUT_NAME = "image"
#: Smallest input side the three Keras applications accept.
MIN_SIZE = 32


def resolve_weights(weights: str | os.PathLike[str] | None) -> str | None:
    """``"imagenet"`` -> ``"imagenet"``; ``None``/``"none"`` -> None; a path -> that path,
    checked to exist."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise UsageError(
            f"--weights {str(weights)!r} is neither 'imagenet', 'none' nor an existing weights"
            " file (.h5 or .weights.h5 of the base network)"
        )
    return str(path)


def resolve_head(
    backbone: Backbone,
    head: str | HeadSpec | None = None,
    units: tuple[int, ...] | None = None,
    dropout: float | None = None,
) -> HeadSpec:
    """The backbone's default head unless a head name/spec is given; units/dropout override."""
    spec = head if isinstance(head, HeadSpec) else get_head(head or backbone.default_head)
    return HeadSpec(
        units=tuple(int(u) for u in units) if units else spec.units,
        dropout=spec.dropout if dropout is None else float(dropout),
    )


def build_model(
    backbone: str | Backbone,
    image_size: Size | None = None,
    *,
    weights: str | os.PathLike[str] | None = "imagenet",
    head: str | HeadSpec | None = None,
    head_units: tuple[int, ...] | None = None,
    dropout: float | None = None,
    freeze_base: bool | None = None,
    bn_momentum: float | None = None,
) -> Any:
    """A ``keras.Model``: input ``image`` (h, w, 3) preprocessed floats -> base -> global
    average pooling -> head -> ``Dense(1, sigmoid)`` named ``prob``.

    ``weights`` is ``"imagenet"`` (default), ``"none"``/None (random initialisation) or the
    path of a weights file for the base. ``freeze_base`` defaults to True with pretrained
    weights (the head trains first) and False from scratch. A pretrained base runs its
    BatchNormalization layers in inference mode, as Keras' transfer-learning guide advises.
    ``bn_momentum`` replaces the base's BatchNormalization momentum (Keras: 0.99); lower
    values let the moving statistics catch up quickly when training from scratch.
    """
    import keras

    bb = backbone if isinstance(backbone, Backbone) else get_backbone(backbone)
    h, w = as_hw(image_size if image_size is not None else bb.default_size)
    if min(h, w) < MIN_SIZE:
        raise UsageError(f"image size {h}x{w} is too small: {bb.name} needs at least {MIN_SIZE}")
    resolved = resolve_weights(weights)
    spec = resolve_head(bb, head, head_units, dropout)
    pretrained = resolved is not None
    try:
        base = bb.constructor()(
            include_top=False, weights=resolved, input_shape=(h, w, 3), **bb.extra_kwargs
        )
    except (ValueError, OSError) as exc:
        if resolved not in (None, "imagenet"):
            raise DataError(
                f"cannot load base weights {resolved} into {bb.name} at {h}x{w}: "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None
        raise
    if bn_momentum is not None:
        if not 0.0 <= float(bn_momentum) < 1.0:
            raise UsageError(f"--bn-momentum must be in [0, 1), got {bn_momentum}")
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(bn_momentum)
    base.trainable = not (pretrained if freeze_base is None else freeze_base)
    inputs = keras.Input((h, w, 3), name=INPUT_NAME)
    x = base(inputs, training=False) if pretrained else base(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    for i, units in enumerate(spec.units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        if i == 0 and spec.dropout > 0:
            x = keras.layers.Dropout(spec.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name=OUTPUT_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"genderscore_{bb.name}")


def find_base(model: Any) -> Any | None:
    """The nested Keras application inside ``model`` (the first layer that is a model)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    return None


def unfreeze_top(model: Any, n_layers: int) -> int:
    """Make the top ``n_layers`` layers of the base trainable (BatchNormalization stays
    frozen, so small fine-tuning batches do not wreck its statistics). Returns how many
    layers were unfrozen."""
    import keras

    base = find_base(model)
    if base is None:
        raise UsageError("model has no nested base network to fine-tune")
    base.trainable = True
    layers = base.layers
    cut = max(len(layers) - int(n_layers), 0)
    unfrozen = 0
    for i, layer in enumerate(layers):
        trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        unfrozen += int(trainable and bool(layer.weights))
    return unfrozen


def logit_model(model: Any) -> Any:
    """A model with the same inputs that returns the log-odds before the final sigmoid:
    outputs saturate with random weights, logits do not."""
    import keras

    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense) or last.units != 1:
        raise UsageError(
            f"expected a final Dense(1) layer, found {type(last).__name__} {last.name!r}"
        )
    kernel, bias = last.get_weights()
    # ``model.input`` (not ``.inputs``): a single-input model then takes a plain tensor.
    features = keras.Model(model.input, last.input)
    logit = keras.layers.Dense(1, activation=None, name="logit")
    out = logit(features.output)
    logit.set_weights([kernel, bias])
    return keras.Model(model.input, out)


def load_model(path: str | os.PathLike[str], *, compile: bool = False) -> Any:
    """Load a ``.keras`` (or legacy ``.h5``) model; genderscore's custom loss is registered
    first so compiled models reload too. :class:`DataError` when the file is no model."""
    import keras

    import models.losses  # noqa: F401  (registers the focal loss for deserialisation)

    path = Path(path)
    if not path.exists():
        raise DataError(f"model file not found: {path}")
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as exc:  # Keras raises many types for a file that is not a model
        raise DataError(
            f"cannot load a Keras model from {path}: {' '.join(str(exc).split())[:300]}"
        ) from None


def model_input_size(model: Any) -> tuple[int, int] | None:
    """``(h, w)`` of the model's image input, or None when it is dynamic."""
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])
