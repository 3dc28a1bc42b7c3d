"""Losses for training: binary focal loss, serialisable so saved models reload compiled.

Imports Keras at module level: only training and model loading import this module.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from models.errors import UsageError

LOSSES = ("bce", "focal")


@keras.saving.register_keras_serializable(package="genderscore", name="BinaryFocalLoss")
class BinaryFocalLoss(keras.losses.Loss):
    """Focal loss (Lin et al. 2017) on sigmoid probabilities:
    ``-alpha_t * (1 - p_t) ** gamma * log(p_t)``, ``alpha`` weighting the positive class.

    A soft target ``y`` (mixup) gets ``y`` times the positive loss plus ``1 - y`` times the
    negative one, the mix of the two images' losses, as binary cross-entropy does. (The
    ``p_t`` form on a soft target would not: at ``y = 0.5`` it is constant in ``p``.)
    ``gamma=0`` and ``alpha=0.5`` give half the binary cross-entropy.
    """

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2.0,
        name: str = "binary_focal_loss",
        reduction: str = "sum_over_batch_size",
        **kwargs: Any,
    ):
        check_focal(alpha, gamma)
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)), y_pred.dtype)
        eps = keras.config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        positive = self.alpha * ops.power(1.0 - p, self.gamma) * ops.log(p)
        negative = (1.0 - self.alpha) * ops.power(p, self.gamma) * ops.log(1.0 - p)
        loss = -(y_true * positive + (1.0 - y_true) * negative)
        return ops.mean(loss, axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"alpha": self.alpha, "gamma": self.gamma})
        return config


def check_focal(alpha: float, gamma: float) -> None:
    if not 0.0 < float(alpha) < 1.0:
        raise UsageError(f"--focal-alpha must be in (0, 1), got {alpha}")
    if float(gamma) < 0.0:
        raise UsageError(f"--focal-gamma must be >= 0, got {gamma}")


def make_loss(
    name: str, *, alpha: float = 0.25, gamma: float = 2.0, label_smoothing: float = 0.0
) -> keras.losses.Loss:
    """``"bce"`` -> binary cross-entropy (targets smoothed towards 0.5 by
    ``label_smoothing``); ``"focal"`` -> :class:`BinaryFocalLoss`."""
    if name == "bce":
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing, name="bce")
    if name == "focal":
        return BinaryFocalLoss(alpha=alpha, gamma=gamma)
    raise UsageError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
