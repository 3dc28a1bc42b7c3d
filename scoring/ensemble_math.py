"""The apply-time math of an ensemble: combining its members' probabilities and calibrating
the result (docs/contracts.md, "the ensemble file").

Scoring is the first stage that applies an ensemble, so the pure combining functions live here;
``ensemble/`` fits their parameters and calls the same functions, so there is one piece of
math, not two. Only numpy: a scoring node imports this.

Every combining function takes ``P``, an ``(n, m)`` float array of probabilities of the
ensemble's positive class (one column per member, already oriented), and returns ``(n,)``
float64 probabilities; NaN in a row gives NaN for that row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.errors import DataError
from models.probabilities import sigmoid

METHODS = ("mean", "weighted", "logit", "stacking")
CALIBRATIONS = ("none", "platt", "isotonic")
# Probabilities arrive as float32 and saturate at 0 or 1; clipping keeps their logits finite
# (about +-16), which is also where float32 sigmoid outputs stop changing.
EPS = 1e-7


def to_logits(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities, clipped to ``[EPS, 1 - EPS]`` first (NaN stays NaN)."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def combine_mean(P: np.ndarray) -> np.ndarray:
    """Mean of the members' probabilities."""
    return np.asarray(P, dtype=np.float64).mean(axis=1)


def combine_weighted(P: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of probabilities; ``weights`` are non-negative and sum to 1."""
    return np.asarray(P, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)


def combine_logit_mean(P: np.ndarray) -> np.ndarray:
    """Sigmoid of the mean of the members' logits (a geometric mean of odds)."""
    return sigmoid(to_logits(P).mean(axis=1))


def combine_stacking(P: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """Logistic regression on the members' logits: ``sigmoid(intercept + logits @ coef)``."""
    return sigmoid(float(intercept) + to_logits(P) @ np.asarray(coef, dtype=np.float64))


def calibrate_platt(p: np.ndarray, a: float, b: float) -> np.ndarray:
    """Platt scaling on the logit: ``sigmoid(a * logit(p) + b)``."""
    return sigmoid(float(a) * to_logits(p) + float(b))


def calibrate_isotonic(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A fitted isotonic map: linear between its knots, clipped outside (as scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip").predict``)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.interp(p, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    out[np.isnan(p)] = np.nan
    return out


def apply_combiner(method: str, params: Mapping[str, Any], P: np.ndarray) -> np.ndarray:
    """Dispatch on the combiner's name with its fitted parameters."""
    if method == "mean":
        return combine_mean(P)
    if method == "weighted":
        return combine_weighted(P, params["weights"])
    if method == "logit":
        return combine_logit_mean(P)
    if method == "stacking":
        return combine_stacking(P, params["coef"], params["intercept"])
    raise DataError(f"unknown ensemble method {method!r}: use one of {', '.join(METHODS)}")


def apply_calibration(method: str, params: Mapping[str, Any], p: np.ndarray) -> np.ndarray:
    """Dispatch on the calibration's name (``none`` returns ``p`` unchanged)."""
    if method == "none":
        return np.asarray(p, dtype=np.float64)
    if method == "platt":
        return calibrate_platt(p, params["a"], params["b"])
    if method == "isotonic":
        return calibrate_isotonic(p, params["x"], params["y"])
    raise DataError(f"unknown calibration {method!r}: use one of {', '.join(CALIBRATIONS)}")
