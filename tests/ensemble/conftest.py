"""Synthetic scores with known distributions for the ensemble tests."""

from __future__ import annotations

import numpy as np
import pytest


def synthetic_scores(
    n: int, seed: int, *, separation: tuple[float, ...] = (2.0, 1.0, 0.0), prevalence: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and an (n, m) probability matrix: member j's logit is
    ``separation[j] * (y - 0.5) * 2 + N(0, 1)``, so separation 0 is pure noise."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < prevalence).astype(np.int64)
    sign = 2.0 * y - 1.0
    z = np.column_stack([s * sign + rng.normal(size=n) for s in separation])
    return y, (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


@pytest.fixture
def make_scores():
    """:func:`synthetic_scores`, as a fixture for the test modules."""
    return synthetic_scores
