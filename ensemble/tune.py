"""``ensemble tune``: fit a combiner on labeled validation scores, choose the threshold for an
objective, and record everything needed to trust it in ensemble.json."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from ensemble.bootstrap import bootstrap_ci
from ensemble.fitting import FittedEnsemble, fit_ensemble, n_folds
from ensemble.groups import AuditOptions, Grouping, audit, select_threshold_within_gap
from ensemble.scores import LabeledScores, ScoresFile, labeled_scores, score_groupings
from ensemble.thresholds import Objective, select_threshold
from models.metrics import binary_metrics, equal_error_rate
from scoring.ensemble_spec import EnsembleSpec
from scoring.modelset import MODEL_FILE_KEYS


@dataclass(frozen=True)
class TuneResult:
    spec: EnsembleSpec
    data: LabeledScores
    p_ensemble: np.ndarray
    fitted: FittedEnsemble
    groupings: tuple[Grouping, ...] = ()


def model_summary(
    y: np.ndarray, s: np.ndarray, objective: Objective, class_names: tuple[str, str]
) -> dict:
    """One score's AUC, EER, and metrics at its own threshold for ``objective``."""
    choice = select_threshold(y, s, objective)
    eer, eer_thr = equal_error_rate(y, s)
    metrics = binary_metrics(y, s, choice.threshold, class_names)
    return {
        "roc_auc": metrics["roc_auc"],
        "eer": eer,
        "eer_threshold": eer_thr,
        "threshold": choice.threshold,
        "objective_value": choice.value,
        "metrics": metrics,
    }


def tune(
    scores: ScoresFile,
    *,
    objective: Objective,
    method: str = "auto",
    positive: str = "male",
    calibration: str = "none",
    cv: int = 5,
    seed: int = 0,
    n_boot: int = 2000,
    groups: AuditOptions | None = None,
) -> TuneResult:
    """Fit, choose the threshold on the ensemble's own float32 output (what apply will
    compare), and build the validated :class:`EnsembleSpec`.

    With ``groups``: the per-group rates on validation (``validation.groups``) and, with its
    ``max_gap``, the best threshold whose FAR (or FRR) gap between groups is within it."""
    data = labeled_scores(scores, positive)
    groupings = score_groupings(scores, groups) if groups is not None else ()
    fitted = fit_ensemble(
        data.X,
        data.y,
        method=method,
        objective=objective,
        calibration=calibration,
        cv=cv,
        seed=seed,
    )
    content = {
        "class_names": list(data.class_names),
        "positive_class": positive,
        "models": [{key: m[key] for key in MODEL_FILE_KEYS} for m in data.models],
        "combiner": fitted.combiner.to_json(),
        "calibration": (
            fitted.calibrator.to_json() if fitted.calibrator else {"method": "none", "params": {}}
        ),
        "threshold": 0.5,
        "objective": str(objective),
    }
    # The apply-time code scores the validation rows; the threshold is chosen on exactly those
    # float32 numbers so apply reproduces the validation decisions.
    p = EnsembleSpec.build(content).combine(data.raw)
    gap_choice = None
    if groups is not None and groups.max_gap is not None:
        gap_choice = select_threshold_within_gap(data.y, p, objective, groupings, groups.max_gap)
        choice = gap_choice.choice
        content["max_gap"] = _ceiling_json(groups)
    else:
        choice = select_threshold(data.y, p, objective)
    content["threshold"] = choice.threshold
    content["validation"] = _validation_record(data, p, choice, objective, n_boot, seed)
    if gap_choice is not None:
        content["validation"]["gap_constraint"] = gap_choice.to_json()
    if groupings:
        content["validation"]["groups"] = _group_audit(
            data, p, choice.threshold, content["validation"]["models"], groupings, n_boot, seed
        )
    content["selection"] = _selection_record(method, fitted, objective, n_folds(data.y, cv), seed)
    content["created_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    content["tuned_with"] = {"genderscore": _version(), "scores": scores.path}
    spec = EnsembleSpec.build(content)
    return TuneResult(spec=spec, data=data, p_ensemble=p, fitted=fitted, groupings=groupings)


def _validation_record(
    data: LabeledScores, p: np.ndarray, choice: Any, objective: Objective, n_boot: int, seed: int
) -> dict[str, Any]:
    """``validation`` in ensemble.json: the rows used, the ensemble's and each member's
    figures on them, and the bootstrap intervals at the chosen threshold."""
    classes = data.ordered_classes
    ens = model_summary(data.y, p, objective, classes)
    return {
        "rows": {"total": data.n_total, "used": len(data.y), "dropped_not_ok": data.n_dropped},
        "fingerprint": data.fingerprint,
        "ensemble": {
            "roc_auc": ens["roc_auc"],
            "eer": ens["eer"],
            "objective_value": choice.value,
            "metrics": binary_metrics(data.y, p, choice.threshold, classes),
            "ci": bootstrap_ci(
                data.y, p, choice.threshold, class_names=classes, n_boot=n_boot, seed=seed
            ),
        },
        "models": {
            m["name"]: model_summary(data.y, data.X[:, j], objective, classes)
            for j, m in enumerate(data.models)
        },
        "bootstrap": {
            "method": "stratified percentile bootstrap at the fixed threshold",
            "n_boot": n_boot,
            "level": 0.95,
            "seed": seed,
        },
    }


def _selection_record(
    method: str, fitted: FittedEnsemble, objective: Objective, folds: int, seed: int
) -> dict[str, Any]:
    """``selection`` in ensemble.json: which combiner was asked for, which won, and why."""
    better = "lower" if objective.lower_is_better else "higher"
    return {
        "requested": method,
        "chosen": fitted.chosen.method,
        "objective": str(objective),
        "value": objective.value_name,
        "cv_folds": folds,
        "seed": seed,
        "note": f"each method's objective on its pooled out-of-fold scores ({better} is better)",
        "results": [r.to_json() for r in fitted.results],
    }


def _ceiling_json(groups: AuditOptions) -> dict:
    """The gap ceiling as ensemble.json records it: enough to check it again on new data."""
    assert groups.max_gap is not None
    return {
        "rate": groups.max_gap.rate,
        "limit": groups.max_gap.limit,
        "group_by": list(groups.group_by),
        "bands": {c: list(e) for c, e in groups.bands.items()},
        "min_group": groups.min_group,
    }


def _group_audit(
    data: LabeledScores,
    p: np.ndarray,
    threshold: float,
    members: dict,
    groupings: tuple[Grouping, ...],
    n_boot: int,
    seed: int,
) -> dict:
    """Per-group rates on validation: the ensemble at ``threshold``, each member at its own."""
    by_score = {"ensemble": (p, threshold)}
    by_score |= {
        m["name"]: (data.X[:, j], members[m["name"]]["threshold"])
        for j, m in enumerate(data.models)
    }
    return audit(data.y, by_score, groupings, n_boot=n_boot, seed=seed)


def _version() -> str:
    try:
        return version("genderscore")
    except PackageNotFoundError:
        return "unknown"
