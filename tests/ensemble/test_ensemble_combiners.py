"""Combiners, calibrators and the cross-validated choice between them on known distributions."""

from __future__ import annotations

import numpy as np
import pytest
from ens_support import synthetic_scores
from sklearn.metrics import roc_auc_score

from ensemble.calibration import IsotonicCalibrator, PlattCalibrator, make_calibrator
from ensemble.combiners import (
    COMBINERS,
    LogitMeanCombiner,
    MeanCombiner,
    StackingCombiner,
    WeightedCombiner,
    make_combiner,
)
from ensemble.fitting import fit_ensemble, out_of_fold
from ensemble.thresholds import Objective
from models.errors import DataError, UsageError
from scoring.ensemble_math import METHODS, apply_combiner, to_logits


def test_stacking_beats_the_mean_when_one_member_is_noise():
    y, X = synthetic_scores(2000, seed=1, separation=(1.5, 0.0, 0.0))
    y_test, X_test = synthetic_scores(4000, seed=2, separation=(1.5, 0.0, 0.0))
    stack = StackingCombiner(random_state=0).fit(X, y)
    auc_stack = roc_auc_score(y_test, stack.predict_proba(X_test)[:, 1])
    auc_mean = roc_auc_score(y_test, MeanCombiner().fit(X, y).predict_proba(X_test)[:, 1])
    assert auc_stack > auc_mean + 0.03
    # the noise members get (near) zero weight, the informative one the weight
    assert abs(stack.coef_[0]) > 5 * np.abs(stack.coef_[1:]).max()


def test_weights_favour_the_informative_member():
    y, X = synthetic_scores(2000, seed=4, separation=(1.0, 0.0))
    w = WeightedCombiner().fit(X, y).weights_
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[0] > 0.9 and w[1] < 0.1
    # two informative members of different strength: both used, the stronger more
    y, X = synthetic_scores(2000, seed=4, separation=(1.5, 0.8))
    w = WeightedCombiner().fit(X, y).weights_
    assert w[0] > w[1] > 0.05


def test_predict_proba_is_the_apply_time_function():
    y, X = synthetic_scores(300, seed=5)
    for est in (MeanCombiner(), LogitMeanCombiner(), WeightedCombiner(), StackingCombiner()):
        est.fit(X, y)
        doc = est.to_json()
        np.testing.assert_array_equal(
            est.predict_proba(X)[:, 1], apply_combiner(doc["method"], doc["params"], X)
        )
        assert est.predict_proba(X).shape == (300, 2)
    np.testing.assert_allclose(
        LogitMeanCombiner().fit(X, y).predict_proba(X)[:, 1],
        1 / (1 + np.exp(-to_logits(X).mean(axis=1))),
    )


def test_calibration_makes_scores_honest():
    # the member's logit z is N(+-1, 1), so the true log-odds are 2z; it reports 4z
    y, X = synthetic_scores(4000, seed=6, separation=(1.0,))
    over = 1 / (1 + np.exp(-4 * to_logits(X[:, 0])))
    for cal in (PlattCalibrator(), IsotonicCalibrator()):
        q = cal.fit(over, y).predict(over)
        # mean predicted probability within bins matches the observed rate
        bins = np.digitize(q, [0.2, 0.4, 0.6, 0.8])
        for b in np.unique(bins):
            sel = bins == b
            if sel.sum() > 200:
                assert abs(q[sel].mean() - y[sel].mean()) < 0.05
    platt = PlattCalibrator().fit(over, y)
    assert platt.a_ == pytest.approx(0.5, abs=0.05)


def test_fit_ensemble_auto_records_each_method_and_prefers_stacking_over_noise():
    y, X = synthetic_scores(1500, seed=7, separation=(1.5, 0.0, 0.0))
    fitted = fit_ensemble(X, y, method="auto", objective=Objective("eer"), calibration="platt")
    assert [r.method for r in fitted.results] == ["mean", "weighted", "logit", "stacking"]
    values = {r.method: r.cv_value for r in fitted.results}
    assert fitted.chosen.method in ("weighted", "stacking")
    assert values[fitted.chosen.method] < values["mean"] - 0.02
    assert fitted.calibrator is not None and fitted.calibrator.params_["a"] > 0


def test_out_of_fold_is_not_the_in_sample_fit():
    y, X = synthetic_scores(400, seed=8)
    oof = out_of_fold("stacking", X, y, cv=5, seed=0)
    fit = StackingCombiner().fit(X, y).predict_proba(X)[:, 1]
    assert oof.shape == fit.shape and not np.allclose(oof, fit)
    np.testing.assert_array_equal(oof, out_of_fold("stacking", X, y, cv=5, seed=0))


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.array([[0.2, np.nan], [0.4, 0.5]]), np.array([0, 1]), r"1 NaN score\(s\) in column 1"),
        (np.array([[0.2, 1.5], [0.4, 0.5]]), np.array([0, 1]), "not probabilities in"),
        (np.array([[0.2], [0.4], [0.9]]), np.array([1, 1, 1]), "one class only"),
        (np.array([[0.2], [0.4]]), np.array([0, 2]), "labels must be 0"),
        (np.zeros((0, 2)), np.zeros(0), "must be an"),
    ],
)
def test_bad_input_is_one_clear_error(X, y, match):
    with pytest.raises(DataError, match=match):
        WeightedCombiner().fit(X, y)


def test_every_file_method_has_a_combiner():
    assert tuple(COMBINERS) == METHODS


def test_unknown_names():
    with pytest.raises(UsageError, match="unknown method 'median'"):
        make_combiner("median")
    with pytest.raises(UsageError, match="unknown calibration 'beta'"):
        make_calibrator("beta")
    y, X = synthetic_scores(50, seed=1)
    with pytest.raises(UsageError, match="unknown method 'best'"):
        fit_ensemble(X, y, method="best", objective=Objective("eer"))
