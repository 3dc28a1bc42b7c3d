"""Bootstrap intervals: coverage in a seeded simulation, agreement with binary_metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from ensemble.bootstrap import bootstrap_ci
from models.errors import UsageError
from models.metrics import binary_metrics


def test_estimates_are_binary_metrics_at_the_threshold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.uniform(size=300) * 0.6 + 0.4 * y
    ci = bootstrap_ci(y, s, 0.5, class_names=("female", "male"), seed=1)
    m = binary_metrics(y, s, 0.5, class_names=("female", "male"))
    for key in ("far", "frr", "accuracy", "macro_f1"):
        assert ci[key]["estimate"] == pytest.approx(m[key])
        assert ci[key]["low"] <= ci[key]["estimate"] <= ci[key]["high"]
    assert ci["accuracy_female"]["estimate"] == pytest.approx(m["per_class"]["female"]["accuracy"])
    assert ci["accuracy_male"]["estimate"] == pytest.approx(m["per_class"]["male"]["accuracy"])
    assert bootstrap_ci(y, s, 0.5, seed=1) == bootstrap_ci(y, s, 0.5, seed=1)


def test_intervals_cover_the_truth_at_about_the_stated_rate():
    # negatives N(0,1), positives N(1.5,1), threshold 0.8: true FAR = 1 - Phi(0.8),
    # FRR = Phi(0.8 - 1.5); 400 seeded validation sets of 250 + 250 rows.
    t, n = 0.8, 250
    truth = {"far": 1 - norm.cdf(t), "frr": norm.cdf(t - 1.5)}
    truth["accuracy"] = 1 - (truth["far"] + truth["frr"]) / 2
    rng = np.random.default_rng(2024)
    hits = {k: 0 for k in truth}
    sims = 400
    y = np.r_[np.zeros(n, int), np.ones(n, int)]
    for i in range(sims):
        s = np.r_[rng.normal(0, 1, n), rng.normal(1.5, 1, n)]
        ci = bootstrap_ci(y, s, t, n_boot=1000, seed=i)
        for k in truth:
            hits[k] += ci[k]["low"] <= truth[k] <= ci[k]["high"]
    for k, h in hits.items():
        assert 0.91 <= h / sims <= 0.985, (k, h / sims)


def test_bad_parameters():
    y, s = np.array([0, 1]), np.array([0.1, 0.9])
    with pytest.raises(UsageError, match="n_boot must be at least 100"):
        bootstrap_ci(y, s, 0.5, n_boot=10)
    with pytest.raises(UsageError, match="level must be in"):
        bootstrap_ci(y, s, 0.5, level=1.0)
