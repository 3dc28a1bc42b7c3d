"""Binary focal loss: the formula, its special case, and serialisation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models.errors import UsageError
from models.losses import BinaryFocalLoss, make_loss


def test_focal_loss_matches_the_formula_and_reduces_to_cross_entropy():
    y = np.array([[1.0], [0.0], [1.0], [0.0]], dtype=np.float32)
    p = np.array([[0.9], [0.2], [0.3], [0.6]], dtype=np.float32)
    alpha, gamma = 0.3, 2.0
    p_t = np.where(y == 1, p, 1 - p)
    a_t = np.where(y == 1, alpha, 1 - alpha)
    expected = np.mean(-a_t * (1 - p_t) ** gamma * np.log(p_t))
    got = float(BinaryFocalLoss(alpha=alpha, gamma=gamma)(y, p))
    assert got == pytest.approx(expected, rel=1e-5)
    bce = float(keras.losses.BinaryCrossentropy()(y, p))
    assert float(BinaryFocalLoss(alpha=0.5, gamma=0.0)(y, p)) == pytest.approx(bce / 2, rel=1e-4)
    # Easy examples count less than hard ones, relative to cross-entropy.
    easy = float(BinaryFocalLoss(0.5, 2.0)(y[:1], p[:1])) / float(
        keras.losses.BinaryCrossentropy()(y[:1], p[:1])
    )
    hard = float(BinaryFocalLoss(0.5, 2.0)(y[2:3], p[2:3])) / float(
        keras.losses.BinaryCrossentropy()(y[2:3], p[2:3])
    )
    assert easy < hard


def test_focal_loss_serialises_and_rejects_bad_parameters():
    loss = make_loss("focal", alpha=0.4, gamma=1.5)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, BinaryFocalLoss) and (again.alpha, again.gamma) == (0.4, 1.5)
    with pytest.raises(UsageError, match="--focal-alpha must be in"):
        BinaryFocalLoss(alpha=0.0)
    with pytest.raises(UsageError, match="--focal-gamma must be >= 0"):
        make_loss("focal", gamma=-1)
    with pytest.raises(UsageError, match="unknown loss 'mse'"):
        make_loss("mse")


def test_label_smoothing_moves_cross_entropy_targets_towards_one_half():
    y = np.array([[1.0], [0.0]], dtype=np.float32)
    p = np.array([[0.9], [0.2]], dtype=np.float32)
    eps = 0.2
    t = y * (1 - eps) + eps / 2  # targets 0.9 and 0.1
    expected = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
    got = float(make_loss("bce", label_smoothing=eps)(y, p))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(make_loss("bce")(y, p)) < got


def test_mixed_targets_train_towards_the_mix_under_both_losses():
    p = np.array([[0.1], [0.5], [0.8]], dtype=np.float32)
    lam = 0.3  # a mixup target: 0.3 of a positive image, 0.7 of a negative one
    soft, pos, neg = (np.full_like(p, v) for v in (lam, 1.0, 0.0))
    focal = BinaryFocalLoss(alpha=0.3, gamma=2.0, reduction="none")
    mixed = np.asarray(focal(soft, p))
    np.testing.assert_allclose(
        mixed, lam * np.asarray(focal(pos, p)) + (1 - lam) * np.asarray(focal(neg, p)), rtol=1e-5
    )
    assert np.ptp(np.asarray(focal(np.full_like(p, 0.5), p))) > 0.01  # still depends on p
    eps = 0.2
    t = lam * (1 - eps) + eps / 2  # smoothing applies to the mixed target
    expected = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
    assert float(make_loss("bce", label_smoothing=eps)(soft, p)) == pytest.approx(
        expected, rel=1e-5
    )
