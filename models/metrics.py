"""Metrics of a binary classifier from plain arrays: one piece for ``models evaluate``,
``ensemble tune``, ``ensemble evaluate`` and the reports.

Labels are 0/1 with 1 the positive class; scores are P(positive). FAR is the share of
negatives accepted as positive (false positive rate), FRR the share of positives rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from models.errors import DataError
from models.probabilities import is_positive


def check_binary(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and scores once, with a precise message; return them as arrays."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise DataError(
            f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}"
        )
    if len(y) == 0:
        raise DataError("no rows to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise DataError(
            f"labels must be 0 or 1, found {sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}"
        )
    if not np.isfinite(s).all():
        raise DataError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    return y.astype(np.int64), s


def binary_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    class_names: Sequence[str] = ("negative", "positive"),
) -> dict:
    """Accuracy, per-class precision/recall/F1/accuracy, macro and weighted averages,
    ROC AUC, FAR/FRR and the confusion matrix at ``threshold`` (score >= threshold is positive)."""
    y, s = check_binary(y_true, scores)
    pred = is_positive(s, threshold).astype(np.int64)
    cm = skm.confusion_matrix(y, pred, labels=[0, 1])
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y, pred, labels=[0, 1], zero_division=0
    )
    n_neg, n_pos = int(cm[0].sum()), int(cm[1].sum())
    per_class = {
        name: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "accuracy": float(rec[i]),  # per-class accuracy is that class's recall
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    both = n_neg > 0 and n_pos > 0
    return {
        "n": int(len(y)),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float((rec[0] + rec[1]) / 2) if both else float("nan"),
        "macro_f1": float(np.mean(f1)),
        "weighted_f1": float(np.average(f1, weights=support)) if support.sum() else 0.0,
        "macro_precision": float(np.mean(prec)),
        "macro_recall": float(np.mean(rec)),
        "weighted_precision": float(np.average(prec, weights=support)) if support.sum() else 0.0,
        "weighted_recall": float(np.average(rec, weights=support)) if support.sum() else 0.0,
        "roc_auc": float(skm.roc_auc_score(y, s)) if both else float("nan"),
        "far": float(cm[0, 1] / n_neg) if n_neg else float("nan"),
        "frr": float(cm[1, 0] / n_pos) if n_pos else float("nan"),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


def rates_from_counts(tn, fp, fn, tp) -> dict[str, np.ndarray]:
    """Rates from confusion counts, vectorised over any array shape (one piece for threshold
    search and bootstrap): accuracy, far, frr, per-class accuracy (``acc_neg``, ``acc_pos``),
    balanced accuracy, macro F1 (an F1 with no predictions and no truths counts 0, as
    ``zero_division=0`` in scikit-learn)."""
    tn, fp, fn, tp = (np.asarray(a, dtype=np.float64) for a in (tn, fp, fn, tp))
    n_neg, n_pos = tn + fp, fn + tp
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.where(n_neg > 0, fp / n_neg, np.nan)
        frr = np.where(n_pos > 0, fn / n_pos, np.nan)
        f1_pos = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_neg = np.where(2 * tn + fp + fn > 0, 2 * tn / (2 * tn + fp + fn), 0.0)
        accuracy = (tp + tn) / (n_neg + n_pos)
    return {
        "accuracy": accuracy,
        "far": far,
        "frr": frr,
        "acc_neg": 1.0 - far,
        "acc_pos": 1.0 - frr,
        "balanced_accuracy": 1.0 - (far + frr) / 2,
        "macro_f1": (f1_pos + f1_neg) / 2,
    }


@dataclass(frozen=True)
class OperatingPoints:
    """Confusion counts at every distinct threshold, highest threshold first.

    ``thresholds[0]`` is +inf (accept nothing); ``thresholds[i]`` for i >= 1 are the distinct
    scores, and ``score >= thresholds[i]`` is accepted as positive.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_pos: int
    n_neg: int

    @property
    def far(self) -> np.ndarray:
        return self.fp / self.n_neg

    @property
    def frr(self) -> np.ndarray:
        return (self.n_pos - self.tp) / self.n_pos

    def rates(self) -> dict[str, np.ndarray]:
        """:func:`rates_from_counts` at every threshold."""
        return rates_from_counts(self.n_neg - self.fp, self.fp, self.n_pos - self.tp, self.tp)


def operating_points(y_true: np.ndarray, scores: np.ndarray) -> OperatingPoints:
    """Exact counts at all distinct thresholds in O(n log n) (sorted scores, cumulative sums)."""
    y, s = check_binary(y_true, scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"both classes are needed, got {n_pos} positive and {n_neg} negative rows")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # last position of each run of equal scores: everything up to it is accepted
    ends = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]
    tp = np.cumsum(y_sorted)[ends]
    fp = ends + 1 - tp
    return OperatingPoints(
        thresholds=np.r_[np.inf, s_sorted[ends]],
        tp=np.r_[0, tp].astype(np.int64),
        fp=np.r_[0, fp].astype(np.int64),
        n_pos=n_pos,
        n_neg=n_neg,
    )


def eer_index(points: OperatingPoints) -> int:
    """The operating point where FAR and FRR are closest (ties: the lower mean of the two,
    then the higher threshold)."""
    far, frr = points.far, points.frr
    return int(np.lexsort((np.arange(len(far)), far + frr, np.abs(far - frr)))[0])


def equal_error_rate(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): the mean of FAR and FRR at the distinct threshold where they are
    closest; exact on the data, no interpolation between operating points."""
    points = operating_points(y_true, scores)
    i = eer_index(points)
    return float((points.far[i] + points.frr[i]) / 2), float(points.thresholds[i])
