"""Choosing the decision threshold for an objective, exactly, over every distinct score.

FAR is the share of negatives accepted as positive, FRR the share of positives rejected;
``score >= threshold`` is accepted. The candidates are all distinct scores plus "accept
nothing", so no threshold between two scores could do better on the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.errors import UsageError
from models.metrics import OperatingPoints, eer_index, operating_points

OBJECTIVES = ("far", "frr", "eer", "macro-f1", "balanced-accuracy")
_EXAMPLES = "far=0.01, frr=0.05, eer, macro-f1 or balanced-accuracy"


@dataclass(frozen=True)
class Objective:
    """What the threshold optimises: a FAR or FRR ceiling, the EER, or a score to maximise."""

    name: str
    target: float | None = None

    def __str__(self) -> str:
        return f"{self.name}={self.target:g}" if self.target is not None else self.name

    @property
    def lower_is_better(self) -> bool:
        return self.name in ("far", "frr", "eer")

    @property
    def value_name(self) -> str:
        """What :attr:`ThresholdChoice.value` measures for this objective."""
        if self.name == "far":
            return f"FRR at FAR <= {self.target:g}"
        if self.name == "frr":
            return f"FAR at FRR <= {self.target:g}"
        return {"eer": "EER", "macro-f1": "macro F1", "balanced-accuracy": "balanced accuracy"}[
            self.name
        ]

    def loss(self, value: float) -> float:
        """A number to minimise when comparing methods by this objective."""
        return value if self.lower_is_better else -value


def parse_objective(text: str) -> Objective:
    """``far=0.01`` | ``frr=0.05`` | ``eer`` | ``macro-f1`` | ``balanced-accuracy``."""
    name, sep, raw = str(text).strip().lower().partition("=")
    name = name.strip().replace("_", "-")
    if name not in OBJECTIVES:
        raise UsageError(f"unknown objective {text!r}: use {_EXAMPLES}")
    if name in ("far", "frr"):
        if not sep:
            raise UsageError(f"objective {name} needs a target rate, e.g. {name}=0.01")
        try:
            target = float(raw)
        except ValueError:
            raise UsageError(
                f"objective {text!r}: the target {raw!r} is not a number; e.g. {name}=0.01"
            ) from None
        if not (math.isfinite(target) and 0.0 <= target < 1.0):
            raise UsageError(
                f"objective {text!r}: the target must be a rate in [0, 1), e.g. {name}=0.01"
            )
        return Objective(name, target)
    if sep:
        raise UsageError(f"objective {name} takes no target (got {text!r}): use {name}")
    return Objective(name)


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen operating point and the objective's value there."""

    threshold: float
    far: float
    frr: float
    value: float
    objective: Objective


def objective_values(points: OperatingPoints, objective: Objective) -> np.ndarray:
    """The objective's value at every operating point (inf where a ceiling is broken)."""
    far, frr = points.far, points.frr
    if objective.name == "far":
        return np.where(far <= objective.target, frr, np.inf)
    if objective.name == "frr":
        return np.where(frr <= objective.target, far, np.inf)
    if objective.name == "eer":
        return (far + frr) / 2
    rates = points.rates()
    return rates["macro_f1" if objective.name == "macro-f1" else "balanced_accuracy"]


def choose_index(
    points: OperatingPoints, objective: Objective, allowed: np.ndarray | None = None
) -> int:
    """Index of the best operating point, among the ``allowed`` ones if given (a mask over
    the points; the caller makes sure one is). Ties: for far=x the lower FAR, for frr=x the
    lower FRR (the dominating point); for scores to maximise, the higher threshold."""
    far, frr = points.far, points.frr
    order = np.arange(len(far))
    # lexsort's last key sorts first: disallowed points go last whatever their value
    last = () if allowed is None else (~np.asarray(allowed, dtype=bool),)
    if objective.name == "eer":
        if allowed is None:
            return eer_index(points)
        return int(np.lexsort((order, far + frr, np.abs(far - frr), *last))[0])
    values = objective_values(points, objective)
    if objective.name == "far":
        return int(np.lexsort((order, far, values, *last))[0])
    if objective.name == "frr":
        return int(np.lexsort((order, frr, values, *last))[0])
    return int(np.lexsort((order, -values, *last))[0])


def select_threshold(
    y_true: np.ndarray, scores: np.ndarray, objective: Objective
) -> ThresholdChoice:
    """The threshold that best meets ``objective`` on labels ``y_true`` (1 = positive)."""
    points = operating_points(y_true, scores)
    return choice_at(points, objective, choose_index(points, objective))


def choice_at(points: OperatingPoints, objective: Objective, i: int) -> ThresholdChoice:
    """Operating point ``i`` as a choice. "Accept nothing" (+inf) is returned as the next
    float above the highest score, so the threshold is always a finite number that can be
    written to JSON."""
    value = objective_values(points, objective)[i]
    thr = points.thresholds[i]
    if not np.isfinite(thr):
        thr = np.nextafter(points.thresholds[1], np.inf)
    return ThresholdChoice(
        threshold=float(thr),
        far=float(points.far[i]),
        frr=float(points.frr[i]),
        value=float(value),
        objective=objective,
    )
