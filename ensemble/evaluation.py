"""``ensemble evaluate``: the tuned ensemble on labeled scores it never saw; did the target hold?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble.bootstrap import bootstrap_ci
from ensemble.groups import AuditOptions, Grouping, audit
from ensemble.scores import LabeledScores, ScoresFile, labeled_scores, score_groupings
from ensemble.thresholds import parse_objective
from models.metrics import binary_metrics, equal_error_rate
from scoring.ensemble_spec import EnsembleSpec


@dataclass(frozen=True)
class Evaluation:
    summary: dict
    data: LabeledScores
    p_ensemble: np.ndarray
    groupings: tuple[Grouping, ...] = ()


def spec_scores(spec: EnsembleSpec, scores: ScoresFile) -> LabeledScores:
    """The ensemble's members' labeled scores, after checking they come from its model files."""
    spec.check_models(scores.model_pairs())
    return labeled_scores(scores, spec.positive_class, [m.name for m in spec.models])


def evaluate(
    spec: EnsembleSpec,
    scores: ScoresFile,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    groups: AuditOptions | None = None,
) -> Evaluation:
    """Metrics at the ensemble's threshold with bootstrap CIs, each member's AUC and EER, and
    the objective on this data beside its validation value; with ``groups``, the same rates
    per group of each column (:mod:`ensemble.groups`)."""
    data = spec_scores(spec, scores)
    groupings = score_groupings(scores, groups) if groups is not None else ()
    p = spec.combine(data.raw)
    classes = data.ordered_classes
    metrics = binary_metrics(data.y, p, spec.threshold, classes)
    ci = bootstrap_ci(data.y, p, spec.threshold, class_names=classes, n_boot=n_boot, seed=seed)
    eer, _ = equal_error_rate(data.y, p)
    summary = {
        "ensemble_version": spec.version,
        "scores": scores.path,
        "rows": {"total": data.n_total, "used": len(data.y), "dropped_not_ok": data.n_dropped},
        "fingerprint": data.fingerprint,
        "threshold": spec.threshold,
        "objective": spec.objective,
        "target": target_check(spec, metrics, ci),
        "ensemble": {"roc_auc": metrics["roc_auc"], "eer": eer, "metrics": metrics, "ci": ci},
        "models": {},
    }
    for j, m in enumerate(data.models):
        m_eer, _ = equal_error_rate(data.y, data.X[:, j])
        m_auc = binary_metrics(data.y, data.X[:, j], 0.5, classes)["roc_auc"]
        summary["models"][m["name"]] = {"roc_auc": m_auc, "eer": m_eer}
    if groupings:
        thresholds = member_thresholds(spec)
        by_score = {"ensemble": (p, spec.threshold)}
        by_score |= {
            m["name"]: (data.X[:, j], thresholds[m["name"]]) for j, m in enumerate(data.models)
        }
        summary["groups"] = audit(data.y, by_score, groupings, n_boot=n_boot, seed=seed)
        summary["gap_target"] = gap_check(spec, summary["groups"])
    return Evaluation(summary=summary, data=data, p_ensemble=p, groupings=groupings)


def member_thresholds(spec: EnsembleSpec) -> dict[str, float]:
    """Each member's own threshold for the objective, as tuned on validation (0.5 for an
    ensemble file that records none)."""
    tuned = spec.content.get("validation", {}).get("models", {})
    return {m.name: float(tuned.get(m.name, {}).get("threshold", 0.5)) for m in spec.models}


def target_check(spec: EnsembleSpec, metrics: dict, ci: dict) -> dict:
    """For far=x / frr=x: whether the rate is within x here (and whether its CI is); for the
    other objectives: the value here beside the value on validation."""
    if spec.objective is None:
        return {}
    objective = parse_objective(spec.objective)
    validation = spec.content.get("validation", {}).get("ensemble", {})
    if objective.name in ("far", "frr"):
        rate = metrics[objective.name]
        return {
            "objective": str(objective),
            objective.name: rate,
            "ci": ci[objective.name],
            "held": bool(rate <= objective.target),
            "held_with_95pct_confidence": bool(ci[objective.name]["high"] <= objective.target),
            "validation": validation.get("metrics", {}).get(objective.name),
        }
    key = {"eer": None, "macro-f1": "macro_f1", "balanced-accuracy": "balanced_accuracy"}[
        objective.name
    ]
    here = (metrics["far"] + metrics["frr"]) / 2 if key is None else metrics[key]
    return {
        "objective": str(objective),
        "value": here,
        "validation": validation.get("objective_value"),
    }


def gap_check(spec: EnsembleSpec, groups: dict) -> dict:
    """For an ensemble tuned with ``--max-gap``: per grouped column it was tuned on, whether
    the ensemble's gap is within the ceiling here (empty otherwise)."""
    ceiling = spec.content.get("max_gap")
    if not ceiling:
        return {}
    rate, limit = ceiling["rate"], ceiling["limit"]
    by = {}
    for column in ceiling["group_by"]:
        if column not in groups["by"]:
            continue
        gap = groups["by"][column]["tables"]["ensemble"]["gaps"][rate]
        tuned = spec.content["validation"]["gap_constraint"]["gaps"].get(column)
        held = None if gap.get("gap") is None else bool(gap["gap"] <= limit)
        by[column] = {"gap": gap.get("gap"), "held": held, "validation": tuned}
    return {"max_gap": f"{rate}={limit:g}", "by": by}
