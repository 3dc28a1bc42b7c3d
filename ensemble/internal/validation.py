"""One place that checks the arrays the combiners and calibrators take, with precise messages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.errors import DataError


def check_matrix(
    X: np.ndarray, y: np.ndarray | None = None, names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``X``: (n, m) probabilities of the positive class, one column per model; ``y``: 0/1.

    A 1-D ``X`` is one model. ``names`` name the columns in messages.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"scores must be an (n_rows, n_models) array, got shape {X.shape}")
    names = list(names) if names is not None else [f"column {j}" for j in range(X.shape[1])]
    nan = np.isnan(X).sum(axis=0)
    if nan.any():
        j = int(np.argmax(nan))
        raise DataError(
            f"{int(nan[j])} NaN score(s) in {names[j]}: drop or re-score those rows first"
        )
    bad = ((X < 0) | (X > 1) | ~np.isfinite(X)).sum(axis=0)
    if bad.any():
        j = int(np.argmax(bad))
        raise DataError(f"{int(bad[j])} score(s) in {names[j]} are not probabilities in [0, 1]")
    if y is None:
        return X, None
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise DataError(f"labels must have shape ({X.shape[0]},), got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 (negative) or 1 (positive)")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        only = "positive" if n_pos else "negative"
        raise DataError(
            f"the labels hold one class only (all {len(y)} rows are {only}): "
            "tuning needs both classes"
        )
    return X, y
