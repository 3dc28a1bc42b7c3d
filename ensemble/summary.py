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
