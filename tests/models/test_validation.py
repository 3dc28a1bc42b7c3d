"""The shared parameter checks, and that evaluate and predict refuse a bad threshold with the
same one line before loading any model."""

from __future__ import annotations

import pytest

from models.errors import UsageError
from models.evaluate import evaluate
from models.internal.validation import check_threshold
from models.predict import predict


@pytest.mark.parametrize("value", [0, 0.5, 1, "0.25"])
def test_a_probability_is_a_threshold(value):
    assert check_threshold(value) == float(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, r"^--threshold must be in \[0, 1\], got 1\.5$"),
        (-0.1, r"^--threshold must be in \[0, 1\], got -0\.1$"),
        ("high", r"^--threshold must be a number in \[0, 1\], got 'high'$"),
        (float("nan"), r"^--threshold must be in \[0, 1\], got nan$"),
    ],
)
def test_anything_else_is_refused_naming_the_option(value, message):
    with pytest.raises(UsageError, match=message):
        check_threshold(value)


def test_evaluate_and_predict_check_the_threshold_before_touching_the_model(tmp_path):
    missing = tmp_path / "no-such-model.keras"  # loading it would fail with another message
    with pytest.raises(UsageError, match=r"^--threshold must be in \[0, 1\], got 2\.0$"):
        evaluate(missing, tmp_path, threshold=2.0)
    with pytest.raises(UsageError, match=r"^--threshold must be in \[0, 1\], got 2\.0$"):
        predict(missing, [tmp_path / "a.jpg"], threshold=2.0)
