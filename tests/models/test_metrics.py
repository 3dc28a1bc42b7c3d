"""The shared metrics piece against hand-counted cases and its input checks."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import DataError
from models.metrics import binary_metrics


def test_counts_at_threshold():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.7, 0.3, 0.8, 0.9, 0.95, 0.4, 0.65])
    m = binary_metrics(y, s, threshold=0.5, class_names=("female", "male"))
    # negatives: 2 of 4 accepted; positives: 2 of 6 rejected
    assert m["confusion_matrix"] == [[2, 2], [2, 4]]
    assert m["far"] == pytest.approx(0.5)
    assert m["frr"] == pytest.approx(2 / 6)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["per_class"]["female"]["accuracy"] == pytest.approx(0.5)
    assert m["per_class"]["male"]["precision"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 4 / 6) / 2)
    # AUC by pair counting: 24 (pos, neg) pairs, the positive above in 19
    assert m["roc_auc"] == pytest.approx(19 / 24)


def test_threshold_is_inclusive():
    m = binary_metrics(np.array([0, 1]), np.array([0.5, 0.5]), threshold=0.5)
    assert m["confusion_matrix"] == [[0, 1], [0, 1]]


def test_one_class_gives_nan_auc_not_an_error():
    m = binary_metrics(np.array([1, 1, 1]), np.array([0.2, 0.7, 0.9]))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["far"])
    assert m["frr"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([0, 1], [0.2, np.nan], "NaN"),
        ([0, 2], [0.2, 0.3], "labels must be 0 or 1"),
        ([0, 1, 1], [0.2, 0.3], "equal length"),
        ([], [], "no rows"),
    ],
)
def test_bad_input(y, s, match):
    with pytest.raises(DataError, match=match):
        binary_metrics(np.array(y), np.array(s, dtype=float))
