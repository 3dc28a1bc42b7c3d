"""Input preprocessing, defined once as data plus one formula (no TensorFlow here).

Every mode is ``y = x / divisor + offset``, then optionally RGB->BGR, minus a per-channel
mean, divided by a per-channel std. :func:`preprocess` uses only ``/``, ``+``, ``-`` and
``x[..., ::-1]``, so the same function runs on a numpy array (training input, checks) and on a
TensorFlow tensor (the convert stage bakes it into the ONNX graph). Saved Keras models take
the *preprocessed* float input; the mode travels with the model in ``run.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import UsageError

#: ImageNet channel means in BGR order, as Keras' "caffe" mode subtracts them.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its float RGB 0..255 input transformed (applied in this order)."""

    name: str
    divisor: float = 1.0
    offset: float = 0.0
    #: Reverse the channel axis (RGB -> BGR) after scaling.
    bgr: bool = False
    #: Per-channel mean subtracted after the channel reversal (in the resulting channel order).
    mean: tuple[float, float, float] | None = None
    #: Per-channel std divided by after the mean (in the resulting channel order).
    std: tuple[float, float, float] | None = None
    description: str = ""

    @property
    def channel_order(self) -> str:
        """``"BGR"`` or ``"RGB"``: the channel order the model sees."""
        return "BGR" if self.bgr else "RGB"

    @property
    def is_identity(self) -> bool:
        return (
            self.divisor == 1.0
            and self.offset == 0.0
            and not self.bgr
            and self.mean is None
            and self.std is None
        )

    def as_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-able data."""
        return {
            "name": self.name,
            "divisor": self.divisor,
            "offset": self.offset,
            "channel_order": self.channel_order,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
        }


PREPROCESSING_SPECS: dict[str, PreprocessSpec] = {
    spec.name: spec
    for spec in (
        PreprocessSpec(
            "mobilenet_v2",
            divisor=127.5,
            offset=-1.0,
            description="scale to [-1, 1]: x / 127.5 - 1 (Keras 'tf' mode; MobileNetV2)",
        ),
        PreprocessSpec(
            "resnet50",
            bgr=True,
            mean=IMAGENET_MEAN_BGR,
            description="caffe: RGB -> BGR, minus the ImageNet mean per channel (ResNet50)",
        ),
        PreprocessSpec(
            "efficientnet",
            description="raw [0, 255]: EfficientNet normalises inside the model",
        ),
        PreprocessSpec("rescale", divisor=255.0, description="x / 255, to [0, 1]"),
        PreprocessSpec("none", description="the model takes raw [0, 255] floats"),
    )
}

#: Every preprocessing mode name, in a stable order (CLI choices, error messages).
PREPROCESSING: tuple[str, ...] = tuple(PREPROCESSING_SPECS)


def get_preprocessing(mode: str) -> PreprocessSpec:
    """The spec for ``mode``; a :class:`UsageError` listing the choices otherwise."""
    try:
        return PREPROCESSING_SPECS[mode]
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown preprocessing {mode!r}: choose one of {', '.join(PREPROCESSING)}"
        ) from None


def preprocess(x: Any, mode: str | PreprocessSpec) -> Any:
    """Apply ``mode`` to float RGB pixels in 0..255, channels last.

    Works on numpy arrays (integer arrays are cast to float32 first) and on float TensorFlow
    tensors (cast them before calling). Returns a new array/tensor; ``x`` is not modified.
    """
    spec = mode if isinstance(mode, PreprocessSpec) else get_preprocessing(mode)
    if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    y = x
    if spec.divisor != 1.0:
        y = y / _const(spec.divisor, x)
    if spec.offset != 0.0:
        y = y + _const(spec.offset, x)
    if spec.bgr:
        y = y[..., ::-1]
    if spec.mean is not None:
        y = y - _const(spec.mean, x)
    if spec.std is not None:
        y = y / _const(spec.std, x)
    if y is x and isinstance(x, np.ndarray):
        y = x.copy()
    return y


def _const(value: float | tuple[float, ...], like: Any) -> Any:
    # Constants in the input's float dtype so float32 stays float32 for numpy and TF alike.
    dtype = like.dtype if isinstance(like, np.ndarray) else np.float32
    return np.asarray(value, dtype=dtype)
