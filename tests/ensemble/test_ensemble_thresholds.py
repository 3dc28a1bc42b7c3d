"""Threshold selection against brute force, objectives parsing, EER."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.thresholds import (
    Objective,
    choose_index,
    objective_values,
    parse_objective,
    select_threshold,
)
from models.errors import DataError, UsageError
from models.metrics import binary_metrics, equal_error_rate, operating_points


def brute_force(y: np.ndarray, s: np.ndarray) -> list[dict]:
    """Every candidate threshold, each counted directly (no sorting, no cumulative sums)."""
    out = []
    for t in [*np.unique(s), np.nextafter(s.max(), np.inf)]:
        acc = s >= t
        tp, fp = int((acc & (y == 1)).sum()), int((acc & (y == 0)).sum())
        fn, tn = int((~acc & (y == 1)).sum()), int((~acc & (y == 0)).sum())
        f1p = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
        f1n = 2 * tn / (2 * tn + fp + fn) if 2 * tn + fp + fn else 0.0
        far, frr = fp / (fp + tn), fn / (fn + tp)
        out.append(
            {
                "t": float(t),
                "far": far,
                "frr": frr,
                "macro_f1": (f1p + f1n) / 2,
                "balanced_accuracy": 1 - (far + frr) / 2,
            }
        )
    return out


def cases():
    rng = np.random.default_rng(3)
    for k in range(6):
        n = int(rng.integers(20, 160))
        y = rng.integers(0, 2, size=n)
        y[:2] = [0, 1]
        s = rng.normal(size=n) + 1.2 * y
        if k % 2:  # coarse scores: many ties across classes
            s = np.round(s, 1)
        yield y, (1 / (1 + np.exp(-s))).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.2, 0.5])
def test_far_target_is_met_with_lowest_frr(target):
    for y, s in cases():
        c = select_threshold(y, s, parse_objective(f"far={target}"))
        m = binary_metrics(y, s, c.threshold)
        assert m["far"] <= target and m["far"] == c.far and m["frr"] == c.frr
        feasible = [b for b in brute_force(y, s) if b["far"] <= target]
        best_frr = min(b["frr"] for b in feasible)
        assert c.frr == best_frr
        # and among those, nothing with the same FRR accepts fewer negatives
        assert c.far == min(b["far"] for b in feasible if b["frr"] == best_frr)


@pytest.mark.parametrize("target", [0.0, 0.05, 0.3])
def test_frr_target_mirror(target):
    for y, s in cases():
        c = select_threshold(y, s, parse_objective(f"frr={target}"))
        assert binary_metrics(y, s, c.threshold)["frr"] <= target
        feasible = [b for b in brute_force(y, s) if b["frr"] <= target]
        assert c.far == min(b["far"] for b in feasible)


def test_eer_matches_brute_force():
    for y, s in cases():
        bf = brute_force(y, s)
        gap = min(abs(b["far"] - b["frr"]) for b in bf)
        best = min((b["far"] + b["frr"]) / 2 for b in bf if abs(b["far"] - b["frr"]) == gap)
        eer, thr = equal_error_rate(y, s)
        assert eer == pytest.approx(best, abs=1e-12)
        c = select_threshold(y, s, Objective("eer"))
        assert c.value == pytest.approx(eer, abs=1e-12) and c.threshold == thr


@pytest.mark.parametrize(
    ("name", "key"), [("macro-f1", "macro_f1"), ("balanced-accuracy", "balanced_accuracy")]
)
def test_maximised_scores_match_brute_force(name, key):
    for y, s in cases():
        c = select_threshold(y, s, parse_objective(name))
        assert c.value == pytest.approx(max(b[key] for b in brute_force(y, s)), abs=1e-12)
        assert binary_metrics(y, s, c.threshold)[key] == pytest.approx(c.value, abs=1e-12)


def test_eer_of_known_distributions():
    # N(0,1) against N(2,1): FAR = FRR at the midpoint, EER = Phi(-1) = 0.1587
    rng = np.random.default_rng(0)
    n = 20000
    y = np.r_[np.zeros(n), np.ones(n)].astype(int)
    s = np.r_[rng.normal(0, 1, n), rng.normal(2, 1, n)]
    eer, thr = equal_error_rate(y, s)
    assert eer == pytest.approx(0.1587, abs=0.006)
    assert thr == pytest.approx(1.0, abs=0.05)


def test_operating_points_agree_with_sklearn_roc():
    from sklearn.metrics import roc_curve

    for y, s in cases():
        pts = operating_points(y, s)
        fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(pts.far, fpr)
        np.testing.assert_allclose(1 - pts.frr, tpr)
        np.testing.assert_array_equal(pts.thresholds[1:], thr[1:])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("far=1.5", r"target must be a rate in \[0, 1\)"),
        ("far=-0.1", r"target must be a rate in \[0, 1\)"),
        ("frr=abc", "is not a number"),
        ("far", "needs a target rate"),
        ("eer=0.1", "takes no target"),
        ("auc", "unknown objective"),
    ],
)
def test_bad_objectives(text, match):
    with pytest.raises(UsageError, match=match):
        parse_objective(text)


def test_objective_round_trips_as_text_and_names_its_value():
    names = {
        "far=0.01": "FRR at FAR <= 0.01",
        "frr=0.05": "FAR at FRR <= 0.05",
        "eer": "EER",
        "macro-f1": "macro F1",
        "balanced-accuracy": "balanced accuracy",
    }
    for text, value_name in names.items():
        objective = parse_objective(text)
        assert str(objective) == text and objective.value_name == value_name


def test_one_class_and_nan_scores_are_clear_errors():
    with pytest.raises(DataError, match="both classes are needed"):
        select_threshold(np.ones(5, int), np.linspace(0, 1, 5), Objective("eer"))
    with pytest.raises(DataError, match="NaN or infinite"):
        select_threshold(np.array([0, 1]), np.array([0.2, np.nan]), Objective("eer"))


@pytest.mark.parametrize(
    "objective", ["far=0.1", "frr=0.1", "eer", "macro-f1", "balanced-accuracy"]
)
def test_choose_index_among_allowed_points(objective):
    # every point allowed: the unconstrained choice; the best point forbidden: the best of the
    # rest, as if that point had not been a candidate
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + y
    points = operating_points(y, s)
    obj = parse_objective(objective)
    best = choose_index(points, obj)
    assert choose_index(points, obj, allowed=np.ones(len(points.far), bool)) == best
    allowed = np.ones(len(points.far), bool)
    allowed[best] = False
    second = choose_index(points, obj, allowed=allowed)
    assert second != best and allowed[second]
    values = objective_values(points, obj)
    rest = values[allowed]
    if obj.name == "eer":
        gap = np.abs(points.far - points.frr)
        assert gap[second] == gap[allowed].min()
    elif obj.lower_is_better:
        assert values[second] == rest.min()
    else:
        assert values[second] == rest.max()
