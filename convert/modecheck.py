"""Is the declared preprocessing the one the model was trained with?

Parity cannot tell: Keras and ONNX get the same (possibly wrong) input. With labeled check
data the model is scored under every distinct preprocessing and the declaration is refused
when another one is *clearly* better: by at least ``margin`` AUC and by more than ``z`` (3)
standard errors of the difference (Hanley & McNeil, treating the two AUCs as independent,
which overstates the error; z = 3 also covers comparing against three other modes), so a
barely trained model whose AUCs are all noise is not refused by chance. AUCs are computed on
logits, which do not tie where probabilities saturate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.preprocessing import PREPROCESSING, get_preprocessing

DEFAULT_MARGIN = 0.05
DEFAULT_Z = 3.0


def mode_groups() -> dict[str, tuple[str, ...]]:
    """Preprocessing modes that compute the same input, keyed by the first name
    (``efficientnet`` and ``none`` are both raw 0..255)."""
    groups: dict[tuple, list[str]] = {}
    for name in PREPROCESSING:
        spec = get_preprocessing(name)
        key = (spec.divisor, spec.offset, spec.bgr, spec.mean, spec.std)
        groups.setdefault(key, []).append(name)
    return {names[0]: tuple(names) for names in groups.values()}


def group_of(mode: str) -> str:
    """The :func:`mode_groups` key of ``mode``."""
    return next(key for key, names in mode_groups().items() if mode in names)


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC estimate (Hanley & McNeil 1982)."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return math.sqrt(max(var, 0.0))


@dataclass(frozen=True)
class ModeVerdict:
    declared: str
    aucs: dict[str, float]
    best: str
    margin: float
    threshold: float
    n_pos: int
    n_neg: int

    @property
    def declared_auc(self) -> float:
        return self.aucs[group_of(self.declared)]

    @property
    def refused(self) -> bool:
        return self.best != group_of(self.declared) and (
            self.aucs[self.best] - self.declared_auc > self.threshold
        )

    def describe(self, mode: str) -> str:
        names = mode_groups()[group_of(mode)]
        same = [n for n in names if n != mode]
        return f"{mode} (same input as {', '.join(same)})" if same else mode

    def as_dict(self) -> dict[str, object]:
        return {
            "declared": self.declared,
            "aucs": {k: round(v, 6) for k, v in self.aucs.items()},
            "best": self.best,
            "threshold": round(self.threshold, 6),
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "refused": self.refused,
        }


def judge_modes(
    declared: str,
    aucs: dict[str, float],
    n_pos: int,
    n_neg: int,
    margin: float = DEFAULT_MARGIN,
    z: float = DEFAULT_Z,
) -> ModeVerdict:
    """Decide from per-group AUCs (keys from :func:`mode_groups`) whether ``declared`` stands."""
    declared_group = group_of(declared)
    if declared_group not in aucs:
        raise ValueError(f"no AUC for the declared preprocessing {declared!r}")
    best = max(aucs, key=lambda k: (aucs[k], k == declared_group))
    se = math.hypot(
        hanley_mcneil_se(aucs[best], n_pos, n_neg),
        hanley_mcneil_se(aucs[declared_group], n_pos, n_neg),
    )
    return ModeVerdict(declared, dict(aucs), best, margin, max(margin, z * se), n_pos, n_neg)
