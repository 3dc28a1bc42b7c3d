"""The classification head as one linear map to the positive class's log-odds.

Whatever the head (``Dense(1, sigmoid)``, ``Dense(2, softmax)``, a linear ``Dense`` followed
by an ``Activation``/``Softmax`` layer, or a ``Dense`` that outputs logits), P(positive) is
``sigmoid(z @ w + b)`` for the features ``z`` entering the last ``Dense``: for two-way softmax
``softmax(u)[pos] = sigmoid(u[pos] - u[neg])``. Computing the logit explicitly keeps it exact
where the probability saturates. Pure numpy: tested without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import UsageError
from models.probabilities import flip_where, sigmoid

#: Head kinds: what the model's own output is.
SIGMOID, SOFTMAX, LOGIT, LOGITS2 = "sigmoid", "softmax", "logit", "logits2"


@dataclass(frozen=True)
class LinearHead:
    """``logit = features @ weights + bias`` is the log-odds of the positive class."""

    kind: str
    units: int
    weights: np.ndarray
    bias: float
    positive_index: int
    layer: str = ""

    def logit(self, features: np.ndarray) -> np.ndarray:
        """Positive-class log-odds (float64) from the features entering the last Dense."""
        return np.asarray(features, dtype=np.float64) @ self.weights + self.bias

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "units": self.units,
            "positive_index": self.positive_index,
            "layer": self.layer,
            "features": int(self.weights.shape[0]),
        }


def linear_head(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    activation: str,
    positive_index: int,
    layer: str = "",
) -> LinearHead:
    """The positive-class logit of a final Dense layer with ``activation`` applied after it.

    ``positive_index`` is the index of the positive class in the model's class order (for a
    sigmoid head, index 1 is what the sigmoid predicts).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise UsageError(f"the last Dense layer's kernel has shape {kernel.shape}; expected 2-D")
    units = kernel.shape[1]
    bias_v = np.zeros(units) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
    if positive_index not in (0, 1):
        raise UsageError(f"positive class index must be 0 or 1, got {positive_index}")
    kinds = {(1, "sigmoid"): SIGMOID, (1, "linear"): LOGIT}
    kinds |= {(2, "softmax"): SOFTMAX, (2, "linear"): LOGITS2}
    kind = kinds.get((units, activation))
    if kind is None:
        raise UsageError(
            f"the model ends in Dense({units}, {activation}): genderscore converts binary"
            " classifiers ending in Dense(1, sigmoid) or Dense(2, softmax) (or their logits)"
        )
    if units == 1:
        sign = 1.0 if positive_index == 1 else -1.0
        return LinearHead(
            kind, 1, sign * kernel[:, 0], sign * float(bias_v[0]), positive_index, layer
        )
    pos, neg = positive_index, 1 - positive_index
    return LinearHead(
        kind,
        2,
        kernel[:, pos] - kernel[:, neg],
        float(bias_v[pos] - bias_v[neg]),
        positive_index,
        layer,
    )


def positive_probability(output: np.ndarray, kind: str, positive_index: int) -> np.ndarray:
    """P(positive) from the model's own output (the reference the ONNX ``prob`` must match)."""
    out = np.asarray(output, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"model output must be 2-D, got shape {out.shape}")
    if kind == SIGMOID:
        return flip_where(out[:, 0], positive_index != 1)
    if kind == SOFTMAX:
        return out[:, positive_index]
    if kind == LOGIT:
        return sigmoid(out[:, 0] if positive_index == 1 else -out[:, 0])
    if kind == LOGITS2:
        return sigmoid(out[:, positive_index] - out[:, 1 - positive_index])
    raise ValueError(f"unknown head kind {kind!r}")
