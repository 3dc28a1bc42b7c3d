"""Combiners as small scikit-learn-style estimators over the models' probabilities.

``X`` is an ``(n, m)`` array of P(positive) per model, oriented to the ensemble's positive
class. ``fit`` learns the parameters (if any); ``predict_proba`` calls the apply-time function
in :mod:`scoring.ensemble_math`, so fitting and applying share one piece of math.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted

from ensemble.internal.threads import one_blas_thread
from ensemble.internal.validation import check_matrix
from models.errors import UsageError
from models.jsonable import jsonable
from models.probabilities import sigmoid
from scoring.ensemble_math import EPS, METHODS, apply_combiner, to_logits


class Combiner(ClassifierMixin, BaseEstimator):
    """Base: ``fit(X, y)``, ``predict_proba(X)`` -> (n, 2), ``params_`` (JSON-ready)."""

    method: ClassVar[str]

    @one_blas_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> Combiner:
        X, y = check_matrix(X, y)
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.array([0, 1])
        self.params_ = self._fit_params(X, y)
        return self

    def _fit_params(self, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        return {}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "params_")
        X, _ = check_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise UsageError(f"fitted on {self.n_features_in_} models, got {X.shape[1]} columns")
        p = apply_combiner(self.method, self.params_, X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def to_json(self) -> dict[str, Any]:
        """``{"method", "params"}`` for ensemble.json."""
        check_is_fitted(self, "params_")
        return {"method": self.method, "params": jsonable(self.params_)}


class MeanCombiner(Combiner):
    """Mean of probabilities; nothing to fit."""

    method = "mean"


class LogitMeanCombiner(Combiner):
    """Sigmoid of the mean logit; nothing to fit."""

    method = "logit"


class WeightedCombiner(Combiner):
    """Weighted mean of probabilities, weights on the simplex.

    The weights minimise the log loss of ``sigmoid(a * logit(X @ w) + b)``, with ``a`` and
    ``b`` fitted alongside and then dropped: the members' probabilities are rarely
    calibrated, and without that link the loss would favour whichever member happens to be
    calibrated over the one that separates the classes (an underconfident strong member
    would take all the weight). Weights are a softmax of free parameters, so they stay
    non-negative and sum to 1 while L-BFGS searches an unconstrained space.
    """

    method = "weighted"

    def __init__(self, max_iter: int = 500) -> None:
        self.max_iter = max_iter

    def _fit_params(self, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        n, m = X.shape

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            z, a, b = theta[:m], theta[m], theta[m + 1]
            w = np.exp(z - z.max())
            w /= w.sum()
            q = X @ w
            inside = (q > EPS) & (q < 1 - EPS)  # the clip has no gradient
            u = to_logits(q)
            r = a * u + b
            loss = np.mean(np.logaddexp(0.0, r) - y * r)
            dr = (sigmoid(r) - y) / n
            dq = np.where(inside, dr * a / (q * (1 - q)), 0.0)
            dw = X.T @ dq
            dz = w * (dw - w @ dw)  # chain rule through the softmax
            return float(loss), np.r_[dz, dr @ u, dr.sum()]

        res = minimize(
            loss_grad,
            np.r_[np.zeros(m), 1.0, 0.0],
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter},
        )
        z = res.x[:m]
        w = np.exp(z - z.max())
        self.weights_ = w / w.sum()
        self.link_ = (float(res.x[m]), float(res.x[m + 1]))
        return {"weights": self.weights_.tolist()}


class StackingCombiner(Combiner):
    """Logistic regression on the models' logits; its regularisation strength is chosen by
    stratified ``cv``-fold cross-validation (log loss) on the data it is fitted on."""

    method = "stacking"

    def __init__(self, cv: int = 5, Cs: int = 10, random_state: int = 0) -> None:
        self.cv = cv
        self.Cs = Cs
        self.random_state = random_state

    def _fit_params(self, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        folds = min(self.cv, int(np.bincount(y).min()))
        if folds < 2:
            raise UsageError("stacking needs at least 2 rows of each class")
        lr = LogisticRegressionCV(
            Cs=self.Cs,
            l1_ratios=(0.0,),
            cv=StratifiedKFold(folds, shuffle=True, random_state=self.random_state),
            scoring="neg_log_loss",
            use_legacy_attributes=False,
            max_iter=1000,
        ).fit(to_logits(X), y)
        self.coef_ = lr.coef_.ravel().copy()
        self.intercept_ = float(lr.intercept_[0])
        self.C_ = float(lr.C_)
        return {"coef": self.coef_.tolist(), "intercept": self.intercept_, "C": self.C_}


COMBINERS: dict[str, type[Combiner]] = {
    "mean": MeanCombiner,
    "weighted": WeightedCombiner,
    "logit": LogitMeanCombiner,
    "stacking": StackingCombiner,
}


def make_combiner(method: str, *, cv: int = 5, random_state: int = 0) -> Combiner:
    """A fresh, unfitted combiner by name."""
    if method not in COMBINERS:
        raise UsageError(f"unknown method {method!r}: use one of {', '.join(METHODS)} or auto")
    if method == "stacking":
        return StackingCombiner(cv=cv, random_state=random_state)
    return COMBINERS[method]()
