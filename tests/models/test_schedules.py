"""Learning-rate schedules: the cosine's shape and how a phase's progress is read."""

from __future__ import annotations

import math

import pytest

from models.schedules import WARMUP_FLOOR, cosine_rate, phase_progress


def test_cosine_starts_at_the_base_rate_and_ends_at_zero():
    assert cosine_rate(0.01, 0.0) == pytest.approx(0.01)
    assert cosine_rate(0.01, 0.5) == pytest.approx(0.005)
    assert cosine_rate(0.01, 1.0) == pytest.approx(0.0, abs=1e-15)
    rates = [cosine_rate(1.0, p / 20) for p in range(21)]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))


def test_progress_outside_0_1_is_clipped():
    assert cosine_rate(1.0, -0.5) == pytest.approx(1.0)
    assert cosine_rate(1.0, 3.0) == pytest.approx(0.0, abs=1e-15)


def test_warm_up_scales_the_rate_with_a_floor():
    assert cosine_rate(1.0, 0.0, warmup=0.5) == pytest.approx(0.5)
    assert cosine_rate(1.0, 0.0, warmup=0.0) == pytest.approx(WARMUP_FLOOR)
    assert cosine_rate(1.0, 0.0, warmup=2.0) == pytest.approx(1.0)


def test_progress_is_the_further_of_steps_and_time():
    # a quarter of the steps, three quarters of the time to the deadline: time leads
    assert phase_progress(25, 100, now=75.0, start=0.0, deadline=100.0) == pytest.approx(0.75)
    # the steps lead when the time is young
    assert phase_progress(60, 100, now=10.0, start=0.0, deadline=100.0) == pytest.approx(0.6)
    assert phase_progress(60, 100, now=10.0, start=0.0, deadline=None) == pytest.approx(0.6)
    # past the deadline or the last step: the end of the schedule
    assert phase_progress(5, 100, now=150.0, start=0.0, deadline=100.0) == 1.0
    assert phase_progress(120, 100, now=1.0, start=0.0, deadline=None) == 1.0
    assert math.isclose(phase_progress(0, 0, now=1.0, start=0.0, deadline=None), 0.0)
