"""The HTML report of ``ensemble tune`` and ``ensemble evaluate``: figures and a metrics table."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from models.plots import (
    plot_confusion_matrix,
    plot_det,
    plot_group_rates,
    plot_reliability,
    plot_roc,
    plot_score_histograms,
)
from models.probabilities import is_positive

FIGURES = {
    "roc.png": "ROC of every model and the ensemble",
    "det.png": "DET: FRR against FAR (normal-deviate axes), the operating point marked",
    "histograms.png": "Score histograms per true class (threshold dashed on the ensemble)",
    "confusion.png": "Confusion matrix of the ensemble at the threshold",
    "reliability.png": "Reliability diagram: are the probabilities honest?",
}


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    threshold: float,
    class_names: tuple[str, str],
    tables: Mapping[str, list[dict]],
    facts: Mapping[str, str],
    groups: Mapping[str, tuple[np.ndarray, Mapping]] | None = None,
) -> Path:
    """Write ``index.html`` and its PNGs to ``out_dir``; return the HTML path.

    ``scores`` maps each model name (and ``ensemble``) to P(positive); ``tables`` maps a
    heading to rows (dicts of column -> value); ``facts`` are key/value lines shown first;
    ``groups`` maps a grouped column to every row's group and its block of
    :func:`ensemble.groups.audit` (figures: rates with intervals, DET per group).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = {name: (y, np.asarray(s, dtype=np.float64)) for name, s in scores.items()}
    ens = curves["ensemble"][1]
    pred = is_positive(ens, threshold)
    far = float((pred & (y == 0)).sum() / max((y == 0).sum(), 1))
    frr = float((~pred & (y == 1)).sum() / max((y == 1).sum(), 1))
    plot_roc(curves, out / "roc.png")
    plot_det(curves, out / "det.png", points={"threshold": (far, frr)})
    plot_score_histograms(scores, y, class_names, out / "histograms.png", threshold=threshold)
    cm = [
        [int((~pred & (y == 0)).sum()), int((pred & (y == 0)).sum())],
        [int((~pred & (y == 1)).sum()), int((pred & (y == 1)).sum())],
    ]
    plot_confusion_matrix(cm, class_names, out / "confusion.png")
    plot_reliability(curves, out / "reliability.png")
    figures = dict(FIGURES)
    for column, (labels, by) in (groups or {}).items():
        figures |= _group_figures(out, column, y, ens, np.asarray(labels), by)
    page = out / "index.html"
    page.write_text(_html(title, tables, facts, figures), encoding="utf-8")
    return page


def _group_figures(
    out: Path, column: str, y: np.ndarray, ens: np.ndarray, labels: np.ndarray, by: Mapping
) -> dict[str, str]:
    """The per-group figures of one column: FAR and FRR with intervals for every model,
    and the ensemble's DET curve per group (groups with both classes)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", column)
    order = by["groups"]
    series = {
        name: {rate.upper(): [_triple(r[rate]) for r in table["groups"]] for rate in ("far", "frr")}
        for name, table in by["tables"].items()
    }
    rates_png, det_png = f"groups_{slug}.png", f"det_{slug}.png"
    ens_rows = {r["group"]: r for r in by["tables"]["ensemble"]["groups"]}
    names = [g if ens_rows[g]["in_gaps"] else f"{g} *" for g in order]
    plot_group_rates(names, series, out / rates_png, title=column)
    curves, points = {}, {}
    for g in order:
        m = labels == g
        if ens_rows[g]["one_class"] or not ens_rows[g]["in_gaps"]:
            continue
        curves[f"{g} (n={int(m.sum())})"] = (y[m], ens[m])
        points[g] = (ens_rows[g]["far"]["estimate"], ens_rows[g]["frr"]["estimate"])
    if curves:
        plot_det(curves, out / det_png, points=points, title=f"DET by {column} (ensemble)")
    figures = {
        rates_png: f"FAR and FRR by {column}: each model at its threshold, 95% bootstrap "
        "intervals within each group (ensemble in black; * under --min-group rows)",
    }
    if curves:
        figures[det_png] = (
            f"DET of the ensemble per {column} group (groups with both classes and at least "
            "--min-group rows), each group's operating point marked"
        )
    return figures


def _triple(ci: Mapping) -> tuple[float, float, float]:
    return tuple(
        float("nan") if ci[k] is None else float(ci[k]) for k in ("estimate", "low", "high")
    )


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return html.escape(str(v))


def _table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(
    title: str,
    tables: Mapping[str, list[dict]],
    facts: Mapping[str, str],
    figures: Mapping[str, str],
) -> str:
    sections = "".join(
        f"<h2>{html.escape(heading)}</h2>{_table(rows)}" for heading, rows in tables.items()
    )
    fact_items = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    figures = "".join(
        f'<figure><img src="{name}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in figures.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
figcaption {{ font-size: 0.85em; color: #555; max-width: 32em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{fact_items}</table>
{sections}
<h2>Figures</h2>
{figures}
</body></html>
"""
