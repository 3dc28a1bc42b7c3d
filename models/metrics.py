"""Metrics of a binary classifier from plain arrays: one piece for ``models evaluate``,
``ensemble tune``, ``ensemble evaluate`` and the reports.

Labels are 0/1 with 1 the positive class; scores are P(positive). FAR is the share of
negatives accepted as positive (false positive rate), FRR the share of positives rejected.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from models.errors import DataError


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
    pred = (s >= threshold).astype(np.int64)
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
        "roc_auc": float(skm.roc_auc_score(y, s)) if both else float("nan"),
        "far": float(cm[0, 1] / n_neg) if n_neg else float("nan"),
        "frr": float(cm[1, 0] / n_pos) if n_pos else float("nan"),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }
