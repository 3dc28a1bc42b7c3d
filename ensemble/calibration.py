"""Calibration of the combined probability: Platt scaling or isotonic regression.

Fitted here with scikit-learn; applied by :mod:`scoring.ensemble_math` (the same functions
``predict`` calls).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from ensemble.internal.threads import one_blas_thread
from ensemble.internal.validation import check_matrix
from models.errors import UsageError
from models.jsonable import jsonable
from scoring.ensemble_math import CALIBRATIONS, apply_calibration, to_logits


class Calibrator(BaseEstimator):
    """Base: ``fit(p, y)``, ``predict(p)`` -> calibrated p, ``params_`` (JSON-ready)."""

    method: ClassVar[str]

    @one_blas_thread
    def fit(self, p: np.ndarray, y: np.ndarray) -> Calibrator:
        X, y = check_matrix(np.asarray(p).ravel(), y, names=["the combined score"])
        self.params_ = self._fit_params(X[:, 0], y)
        return self

    def _fit_params(self, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def predict(self, p: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "params_")
        return apply_calibration(self.method, self.params_, np.asarray(p, dtype=np.float64))

    def to_json(self) -> dict[str, Any]:
        check_is_fitted(self, "params_")
        return {"method": self.method, "params": jsonable(self.params_)}


class PlattCalibrator(Calibrator):
    """``sigmoid(a * logit(p) + b)``, fitted by unpenalised logistic regression."""

    method = "platt"

    def _fit_params(self, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        lr = LogisticRegression(C=np.inf, max_iter=1000).fit(to_logits(p)[:, None], y)
        self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return {"a": self.a_, "b": self.b_}


class IsotonicCalibrator(Calibrator):
    """A non-decreasing step map, linear between its knots and clipped outside them."""

    method = "isotonic"

    def _fit_params(self, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        self.x_, self.y_ = iso.X_thresholds_.copy(), iso.y_thresholds_.copy()
        return {"x": self.x_.tolist(), "y": self.y_.tolist()}


def make_calibrator(method: str) -> Calibrator | None:
    """A fresh calibrator by name; None for ``none``."""
    if method == "none":
        return None
    if method == "platt":
        return PlattCalibrator()
    if method == "isotonic":
        return IsotonicCalibrator()
    raise UsageError(f"unknown calibration {method!r}: use one of {', '.join(CALIBRATIONS)}")
