"""The typed registry of backbones and classification heads (no TensorFlow at import).

A :class:`Backbone` names its Keras application constructor, the preprocessing its ImageNet
weights expect, its default input size and its default head. The constructor is resolved
only when a model is built, so this module is safe to import on a scoring node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.errors import UsageError
from models.preprocessing import PREPROCESSING


@dataclass(frozen=True)
class HeadSpec:
    """Global average pooling -> Dense(units[0], relu) -> Dropout(dropout) -> Dense(units[1:],
    relu)... -> Dense(1, sigmoid). The output is P(positive class)."""

    units: tuple[int, ...] = (128,)
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if not self.units or any(int(u) < 1 for u in self.units):
            raise UsageError(f"head units must be positive integers, got {self.units!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise UsageError(f"head dropout must be in [0, 1), got {self.dropout!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"units": list(self.units), "dropout": self.dropout}


#: The heads the teams build, by name.
HEADS: dict[str, HeadSpec] = {
    "dense": HeadSpec(units=(128,), dropout=0.5),
    # The ResNet50 team's variant: Dense 128 -> Dropout -> Dense 64.
    "dense128-64": HeadSpec(units=(128, 64), dropout=0.5),
}


@dataclass(frozen=True)
class Backbone:
    """A pretrained feature extractor and how to feed it."""

    name: str
    #: Attribute name in ``keras.applications`` (resolved lazily by :meth:`constructor`).
    application: str
    preprocessing: str
    #: Prefix of the name Keras gives the application model (``mobilenetv2_1.00_224``).
    keras_name_prefix: str
    default_size: int = 224
    default_head: str = "dense"
    #: Layers of the base unfrozen in the fine-tuning phase unless told otherwise.
    fine_tune_layers: int = 30
    extra_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(f"{self.name}: unknown preprocessing {self.preprocessing!r}")
        if self.default_head not in HEADS:
            raise ValueError(f"{self.name}: unknown head {self.default_head!r}")

    @property
    def head(self) -> HeadSpec:
        return HEADS[self.default_head]

    def constructor(self) -> Callable[..., Any]:
        """The ``keras.applications`` constructor (imports Keras)."""
        from keras import applications

        return getattr(applications, self.application)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "mobilenetv2",
            application="MobileNetV2",
            preprocessing="mobilenet_v2",
            keras_name_prefix="mobilenetv2",
            fine_tune_layers=30,
        ),
        Backbone(
            "resnet50",
            application="ResNet50",
            preprocessing="resnet50",
            keras_name_prefix="resnet50",
            default_head="dense128-64",
            fine_tune_layers=20,
        ),
        Backbone(
            "efficientnetb0",
            application="EfficientNetB0",
            preprocessing="efficientnet",
            keras_name_prefix="efficientnetb0",
            fine_tune_layers=30,
        ),
    )
}

#: Every backbone name, in a stable order.
BACKBONE_NAMES: tuple[str, ...] = tuple(BACKBONES)


def get_backbone(name: str) -> Backbone:
    """The backbone called ``name``; a :class:`UsageError` listing the choices otherwise."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown backbone {name!r}: choose one of {', '.join(BACKBONE_NAMES)}"
        ) from None


def get_head(name: str) -> HeadSpec:
    """The head called ``name``; a :class:`UsageError` listing the choices otherwise."""
    try:
        return HEADS[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown head {name!r}: choose one of {', '.join(HEADS)}") from None


def match_backbone(layer_name: str) -> Backbone | None:
    """The backbone whose Keras model name ``layer_name`` starts with (a base inside a
    Sequential or functional model), or None."""
    lowered = layer_name.lower()
    for backbone in BACKBONES.values():
        if lowered.startswith(backbone.keras_name_prefix):
            return backbone
    return None
