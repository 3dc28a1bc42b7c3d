"""Probabilities of a positive class, defined once for every stage: the logistic function,
turning P(one class) into P(the other), and the decision rule ``p >= threshold`` is positive.

Only numpy: training, convert, the scorer and the ensemble all import this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def sigmoid(z: Any) -> np.ndarray:
    """Logistic function as float64, stable for large ``|z|`` (NaN stays NaN)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    out[np.isnan(z)] = np.nan
    return out


def flip_where(p: Any, flip: bool | Sequence[bool] | np.ndarray) -> np.ndarray:
    """``p`` as float64 with ``1 - p`` where ``flip``: P(one class) becomes P(the other).

    ``flip`` is one bool, or one per column of a 2-D ``p`` (a member whose positive class is
    the other class of the two)."""
    p = np.asarray(p, dtype=np.float64)
    return np.where(np.asarray(flip, dtype=bool), 1.0 - p, p)


def is_positive(p: Any, threshold: float) -> np.ndarray:
    """The decision rule: ``p >= threshold`` is the positive class (False where p is NaN).

    ``p`` keeps its dtype: a float32 score is compared as float32, as it was tuned."""
    return np.asarray(p) >= threshold


def decide(p: Any, threshold: float, positive: str, negative: str) -> np.ndarray:
    """Class names (object array) by :func:`is_positive`; None where ``p`` is NaN."""
    p = np.asarray(p, dtype=np.float64)
    out = np.where(is_positive(p, threshold), positive, negative).astype(object)
    out[np.isnan(p)] = None
    return out
