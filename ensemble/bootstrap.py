"""Bootstrap confidence intervals of the metrics at a fixed threshold, and of the ROC AUC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import UsageError
from models.metrics import check_binary, rates_from_counts
from models.probabilities import is_positive

CI_METRICS = ("far", "frr", "accuracy", "macro_f1", "acc_neg", "acc_pos")
#: Replicates x rows held in memory at once by the AUC bootstrap.
_AUC_CHUNK = 4_000_000


@dataclass(frozen=True)
class Replicates:
    """The rates of :func:`models.metrics.rates_from_counts` on the data (``point``) and on
    each bootstrap replicate (``boot``, arrays of ``n_boot``)."""

    point: dict[str, np.ndarray]
    boot: dict[str, np.ndarray]


def check_bootstrap(n_boot: int, level: float) -> None:
    """The bootstrap's parameters, checked once for every interval below."""
    if n_boot < 100:
        raise UsageError(f"n_boot must be at least 100 for a percentile interval, got {n_boot}")
    if not 0.5 <= level < 1:
        raise UsageError(f"level must be in [0.5, 1), got {level}")


def bootstrap_rates(
    y_true: np.ndarray, scores: np.ndarray, threshold: float, *, n_boot: int, seed=0
) -> Replicates:
    """Stratified replicates of the rates at ``threshold``.

    Rows are resampled with replacement within each class, so every replicate has the data's
    class counts (FAR and FRR are rates within a class). At a fixed threshold each row is
    simply right or wrong, so resampling ``n`` rows of a class draws Binomial(n, observed
    error rate) errors; drawing those counts directly is the same bootstrap distribution,
    exactly, at a fraction of the cost. A class absent from the data gives NaN rates.
    """
    y, s = check_binary(y_true, scores)
    pred = is_positive(s, threshold)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    fp, fn = int((pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
    rng = np.random.default_rng(seed)
    fp_b = rng.binomial(n_neg, fp / n_neg, size=n_boot) if n_neg else np.zeros(n_boot)
    fn_b = rng.binomial(n_pos, fn / n_pos, size=n_boot) if n_pos else np.zeros(n_boot)
    return Replicates(
        point=rates_from_counts(n_neg - fp, fp, fn, n_pos - fn),
        boot=rates_from_counts(n_neg - fp_b, fp_b, fn_b, n_pos - fn_b),
    )


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite ``values`` (NaN, NaN if none)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def interval(estimate: float, values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """``{"estimate", "low", "high"}``: the form every interval here is reported in."""
    low, high = percentile_interval(values, level)
    return {"estimate": float(estimate), "low": low, "high": high}


def bootstrap_ci(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    *,
    class_names: Sequence[str] = ("negative", "positive"),
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Percentile intervals for FAR, FRR, accuracy, macro F1 and per-class accuracy, from
    :func:`bootstrap_rates` (stratified within each class).

    Returns ``{metric: {"estimate", "low", "high"}}``; per-class accuracy appears under
    ``accuracy_<class name>``.
    """
    check_bootstrap(n_boot, level)
    reps = bootstrap_rates(y_true, scores, threshold, n_boot=n_boot, seed=seed)
    label = {"acc_neg": f"accuracy_{class_names[0]}", "acc_pos": f"accuracy_{class_names[1]}"}
    return {
        label.get(key, key): interval(reps.point[key], reps.boot[key], level) for key in CI_METRICS
    }


def bootstrap_auc(
    y_true: np.ndarray, scores: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed=0
) -> dict[str, float]:
    """The ROC AUC and its percentile interval, rows resampled within each class.

    A replicate's AUC is computed from how many times it draws each row (multinomial counts):
    with the negatives sorted, the weighted count of negatives below (and tied with) each
    positive is a cumulative sum, so a replicate costs O(rows), not a sort. Ties count one
    half, as in ``sklearn.metrics.roc_auc_score``. One class only: estimate and interval NaN.
    """
    check_bootstrap(n_boot, level)
    y, s = check_binary(y_true, scores)
    pos, neg = s[y == 1], np.sort(s[y == 0])
    if not len(pos) or not len(neg):
        return {"estimate": float("nan"), "low": float("nan"), "high": float("nan")}
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    upto = np.searchsorted(neg, pos, side="right")  # ... and those tied with it
    point = _weighted_auc(np.ones((1, len(pos))), np.ones((1, len(neg))), below, upto)[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _AUC_CHUNK // (len(pos) + len(neg)))
    boot = np.concatenate(
        [
            _weighted_auc(
                _resample_counts(rng, len(pos), b), _resample_counts(rng, len(neg), b), below, upto
            )
            for b in _chunks(n_boot, chunk)
        ]
    )
    return interval(point, boot, level)


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def _resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n): how often each of ``n`` rows is drawn in ``n`` draws with replacement."""
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _weighted_auc(
    w_pos: np.ndarray, w_neg: np.ndarray, below: np.ndarray, upto: np.ndarray
) -> np.ndarray:
    """AUC of each row of weights: P(positive > negative) + P(tie) / 2 over the weighted rows."""
    cum = np.concatenate([np.zeros((len(w_neg), 1)), np.cumsum(w_neg, axis=1)], axis=1)
    wins = np.take_along_axis(cum, np.broadcast_to(below, w_pos.shape), axis=1)
    ties = np.take_along_axis(cum, np.broadcast_to(upto, w_pos.shape), axis=1) - wins
    total = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    return ((wins + ties / 2) * w_pos).sum(axis=1) / total
