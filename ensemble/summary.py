"""Tables shared by the console output and the HTML report."""

from __future__ import annotations

from collections.abc import Mapping

CI_LABELS = {"far": "FAR", "frr": "FRR", "accuracy": "accuracy", "macro_f1": "macro F1"}


def metric_rows(
    ensemble: Mapping, models: Mapping[str, Mapping], classes: tuple[str, str], threshold: float
) -> list[dict]:
    """One row per model (at its own threshold for the objective, when it has one) and the
    ensemble last, at its threshold."""
    neg, pos = classes

    def at(m: Mapping) -> dict:
        return {
            "FAR": m["far"],
            "FRR": m["frr"],
            "accuracy": m["accuracy"],
            "macro F1": m["macro_f1"],
            f"acc {neg}": m["per_class"][neg]["accuracy"],
            f"acc {pos}": m["per_class"][pos]["accuracy"],
        }

    rows = []
    for name, entry in models.items():
        row = {"model": name, "AUC": entry["roc_auc"], "EER": entry["eer"]}
        if entry.get("metrics"):
            row |= {"threshold": entry["threshold"], **at(entry["metrics"])}
        rows.append(row)
    rows.append(
        {
            "model": "ensemble",
            "AUC": ensemble["roc_auc"],
            "EER": ensemble["eer"],
            "threshold": threshold,
            **at(ensemble["metrics"]),
        }
    )
    return rows


def ci_rows(ci: Mapping[str, Mapping], classes: tuple[str, str]) -> list[dict]:
    """The ensemble's metrics at its threshold with their 95% bootstrap intervals."""
    labels = dict(CI_LABELS)
    labels |= {f"accuracy_{c}": f"accuracy {c}" for c in classes}
    return [
        {
            "metric": labels.get(k, k),
            "estimate": v["estimate"],
            "95% low": v["low"],
            "95% high": v["high"],
        }
        for k, v in ci.items()
    ]


def ci_cell(ci: Mapping | None, digits: int = 3) -> str:
    """``0.052 [0.040, 0.066]``; ``n/a`` where the estimate is null (a class is absent)."""
    if ci is None or ci.get("estimate") is None or ci["estimate"] != ci["estimate"]:
        return "n/a"
    low, high = ci.get("low"), ci.get("high")
    if low is None or high is None:
        return f"{ci['estimate']:.{digits}f}"
    return f"{ci['estimate']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def group_rows(by: Mapping, classes: tuple[str, str]) -> list[dict]:
    """One column's per-group table: every group of the ensemble, then of each member."""
    neg, pos = classes
    rows = []
    for name, table in by["tables"].items():
        for r in table["groups"]:
            rows.append(
                {
                    "model": name,
                    "group": r["group"] + ("" if r["in_gaps"] else " *"),
                    f"n {neg}": r["n_negative"],
                    f"n {pos}": r["n_positive"],
                    "accuracy": ci_cell(r["accuracy"]),
                    "FAR": ci_cell(r["far"]),
                    "FRR": ci_cell(r["frr"]),
                    "AUC": ci_cell(r["auc"]) if not r["one_class"] else "n/a (one class)",
                }
            )
    return rows


def gap_rows(by: Mapping) -> list[dict]:
    """One column's gaps: per model, the worst minus the best group's FAR and FRR."""
    rows = []
    for name, table in by["tables"].items():
        row = {"model": name}
        for rate in ("far", "frr"):
            gap = table["gaps"][rate]
            label = rate.upper()
            if gap.get("gap") is None:
                row |= {f"{label} gap": "n/a", f"{label} worst": "", f"{label} best": ""}
                continue
            ci = {"estimate": gap["gap"], "low": gap["low"], "high": gap["high"]}
            row |= {
                f"{label} gap": ci_cell(ci) + (" real" if gap["excludes_zero"] else ""),
                f"{label} worst": f"{gap['worst']} ({gap['worst_value']:.3f})",
                f"{label} best": f"{gap['best']} ({gap['best_value']:.3f})",
            }
        rows.append(row)
    return rows


def group_notes(by: Mapping) -> list[str]:
    """What the tables need said: pooling, groups left out of the gaps, one-class groups."""
    notes = list(by["notes"])
    ens = next(iter(by["tables"].values()))
    one = [r["group"] for r in ens["groups"] if r["one_class"]]
    if one:
        notes.append(
            f"{', '.join(one)}: one class only, so no AUC there (and no FAR without the "
            "negative class, no FRR without the positive one)"
        )
    if any(not r["in_gaps"] for r in ens["groups"]):
        notes.append(f"*: under {by['min_group']} rows, left out of the gaps")
    pairs = {t["gaps"]["far"].get("groups_compared", 0) for t in by["tables"].values()}
    k = max(pairs) if pairs else 0
    if k > 2:
        notes.append(
            f"gap CIs hold for all {k * (k - 1) // 2} pairs of the {k} groups at once "
            "(Bonferroni); 'real': the CI excludes 0"
        )
    elif k == 2:
        notes.append("'real': the gap's 95% CI excludes 0")
    return notes
