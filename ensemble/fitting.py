"""Fitting an ensemble: out-of-fold scores, comparing methods by a cross-validated objective,
then the final combiner (all rows) and calibrator (fitted on out-of-fold scores)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ensemble.calibration import Calibrator, make_calibrator
from ensemble.combiners import Combiner, make_combiner
from ensemble.internal.threads import one_blas_thread
from ensemble.internal.validation import check_matrix
from ensemble.thresholds import Objective, select_threshold
from models.errors import UsageError
from scoring.ensemble_math import METHODS

# Combiners with nothing to fit give the same scores in and out of fold.
_PARAMETER_FREE = ("mean", "logit")


@dataclass(frozen=True)
class MethodResult:
    """One method's cross-validated showing: the objective on its out-of-fold scores."""

    method: str
    cv_value: float
    cv_threshold: float
    oof: np.ndarray

    def to_json(self) -> dict:
        return {"method": self.method, "cv_value": self.cv_value, "cv_threshold": self.cv_threshold}


@dataclass(frozen=True)
class FittedEnsemble:
    combiner: Combiner
    calibrator: Calibrator | None
    chosen: MethodResult
    results: list[MethodResult]
    cv: int
    seed: int


def n_folds(y: np.ndarray, cv: int) -> int:
    """``cv`` folds, fewer if the smaller class has fewer rows; at least 2."""
    folds = min(cv, int(np.bincount(y, minlength=2).min()))
    if folds < 2:
        raise UsageError(
            f"cross-validation needs at least 2 rows of each class, got {np.bincount(y).tolist()}"
        )
    return folds


def out_of_fold(
    method: str, X: np.ndarray, y: np.ndarray, *, cv: int = 5, seed: int = 0
) -> np.ndarray:
    """P(positive) for every row from a combiner fitted without that row's fold."""
    X, y = check_matrix(X, y)
    if method in _PARAMETER_FREE:
        return make_combiner(method).fit(X, y).predict_proba(X)[:, 1]
    folds = StratifiedKFold(n_folds(y, cv), shuffle=True, random_state=seed)
    est = make_combiner(method, cv=cv, random_state=seed)
    return cross_val_predict(est, X, y, cv=folds, method="predict_proba")[:, 1]


@one_blas_thread
def compare_methods(
    X: np.ndarray,
    y: np.ndarray,
    objective: Objective,
    methods: tuple[str, ...] = METHODS,
    *,
    cv: int = 5,
    seed: int = 0,
) -> list[MethodResult]:
    """Each method's objective on its pooled out-of-fold scores (one threshold chosen on them).

    Calibration is left out: it is monotone, so it does not change which operating points a
    threshold can reach.
    """
    results = []
    for method in methods:
        oof = out_of_fold(method, X, y, cv=cv, seed=seed)
        # float32 as in the Parquet the ensemble will write, so ties are the same ties
        choice = select_threshold(y, oof.astype(np.float32), objective)
        results.append(MethodResult(method, choice.value, choice.threshold, oof))
    return results


def best_method(results: list[MethodResult], objective: Objective) -> MethodResult:
    """The best cross-validated value; ties go to the simpler method (earlier in METHODS)."""
    rank = {m: i for i, m in enumerate(METHODS)}
    return min(results, key=lambda r: (objective.loss(r.cv_value), rank[r.method]))


@one_blas_thread
def fit_ensemble(
    X: np.ndarray,
    y: np.ndarray,
    *,
    method: str,
    objective: Objective,
    calibration: str = "none",
    cv: int = 5,
    seed: int = 0,
) -> FittedEnsemble:
    """Choose the method (``auto`` compares all), fit it on every row, calibrate on its
    out-of-fold scores (so a fitted combiner does not calibrate on its own training fit)."""
    X, y = check_matrix(X, y)
    if method != "auto" and method not in METHODS:
        raise UsageError(f"unknown method {method!r}: use one of {', '.join(METHODS)} or auto")
    methods = METHODS if method == "auto" else (method,)
    calibrator = make_calibrator(calibration)  # checks the name before any fitting
    results = compare_methods(X, y, objective, methods, cv=cv, seed=seed)
    chosen = best_method(results, objective)
    combiner = make_combiner(chosen.method, cv=cv, random_state=seed).fit(X, y)
    if calibrator is not None:
        calibrator.fit(chosen.oof, y)
    return FittedEnsemble(combiner, calibrator, chosen, results, cv, seed)
