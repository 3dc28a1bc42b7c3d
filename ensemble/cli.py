"""`genderscore ensemble` commands: tune, apply, evaluate."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from models.errors import GenderscoreError, UsageError
from models.framing import FACE_MODES
from scoring.cli import storage_option_flag

log = logging.getLogger(__name__)
METHOD_CHOICES = ["mean", "weighted", "logit", "stacking", "auto"]
CALIBRATION_CHOICES = ["none", "platt", "isotonic"]


def _console() -> Console:
    # Piped output (logs, CI) would otherwise be cut to 80 columns and truncate the tables;
    # 160 holds the per-group tables (four rates with intervals) without wrapping.
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Combine the models' scores, tune the threshold, apply and evaluate an ensemble.

    tune: labeled validation scores -> ensemble.json (+ HTML report).
    apply: ensemble.json + scores -> decided Parquet (+ Kaggle-style CSV).
    evaluate: ensemble.json + labeled test scores -> did the target hold?
    """


def _storage(values: tuple[str, ...]):
    from scoring.storage import StorageOptions

    return StorageOptions.parse(values)


def _objective(ctx: click.Context, param: click.Parameter, value: str):
    from ensemble.thresholds import parse_objective

    try:
        return parse_objective(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def _group_options(command):
    """--group-by, --bands and --min-group, shared by tune and evaluate."""
    options = [
        click.option(
            "--group-by",
            "group_by",
            multiple=True,
            help="Also report FAR, FRR, accuracy and AUC per group of this column of the "
            "scores (kept with 'scoring run --keep-columns'); repeat for more columns.",
        ),
        click.option(
            "--bands",
            multiple=True,
            help="COLUMN=EDGES: band a numeric --group-by column at increasing edges, e.g. "
            "age=0,18,40,60,200 ([0, 18), [18, 40), ...); repeatable.",
        ),
        click.option(
            "--min-group",
            type=int,
            default=30,
            show_default=True,
            help="Groups with fewer rows are pooled into 'other' (and said so).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@click.option(
    "--scores",
    "scores_path",
    help="Labeled validation scores: a Parquet file or folder written by 'scoring run' "
    "(or an s3://, gs:// URI of one).",
)
@storage_option_flag("--scores")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    help="Instead of --scores: a labeled manifest (CSV/Parquet) to score first with --models.",
)
@click.option(
    "--models",
    "model_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="ONNX models to score --manifest with (repeat the option, one per model).",
)
@click.option(
    "--scores-out",
    type=click.Path(path_type=Path),
    help="Where --manifest's scores are written (default: <out>.scores next to --out).",
)
@click.option(
    "--label-column",
    help="With --manifest: the manifest's label column (default: 'label').",
)
@click.option(
    "--path-column",
    help="With --manifest: the manifest's image path column (default: 'path').",
)
@click.option(
    "--root",
    help="With --manifest: folder or URI that relative image paths are under.",
)
@click.option(
    "--faces",
    type=click.Choice(FACE_MODES),
    help="With --manifest: face framing for every model (off, align, require). Default: each "
    "model's own.",
)
@click.option(
    "--method",
    type=click.Choice(METHOD_CHOICES),
    default="auto",
    show_default=True,
    help="How to combine the models; auto picks the best cross-validated objective.",
)
@click.option(
    "--objective",
    default="eer",
    show_default=True,
    callback=_objective,
    help="far=X (lowest FRR with FAR <= X), frr=X (mirror), eer, macro-f1 or balanced-accuracy.",
)
@click.option(
    "--positive",
    default="male",
    show_default=True,
    help="The positive class: FAR = share of the other class accepted as it.",
)
@click.option(
    "--calibration",
    type=click.Choice(CALIBRATION_CHOICES),
    default="none",
    show_default=True,
    help="Calibrate the ensemble's probability (fitted on out-of-fold scores).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("ensemble.json"),
    show_default=True,
    help="Where to write the ensemble file.",
)
@click.option(
    "--report", type=click.Path(path_type=Path), help="Write an HTML report with figures here."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for folds, bootstrap.")
@click.option(
    "--cv",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Cross-validation folds for stacking, weights and the method comparison.",
)
@click.option(
    "--n-boot",
    type=click.IntRange(min=100),
    default=2000,
    show_default=True,
    help="Bootstrap replicates for the 95% confidence intervals.",
)
@_group_options
@click.option(
    "--max-gap",
    help="far=X or frr=X (needs --group-by): the threshold meets --objective with the FAR "
    "(or FRR) of the worst and the best group at most X apart on validation.",
)
def tune(
    scores_path: str | None,
    storage_options: tuple[str, ...],
    manifest: Path | None,
    model_paths: tuple[Path, ...],
    scores_out: Path | None,
    label_column: str | None,
    path_column: str | None,
    root: str | None,
    faces: str | None,
    method: str,
    objective,
    positive: str,
    calibration: str,
    out: Path,
    report: Path | None,
    seed: int,
    cv: int,
    n_boot: int,
    group_by: tuple[str, ...],
    bands: tuple[str, ...],
    min_group: int,
    max_gap: str | None,
) -> None:
    """Fit an ensemble on labeled validation scores and choose its threshold."""
    from ensemble.groups import audit_options
    from ensemble.scores import read_scores
    from ensemble.tune import tune as run_tune

    groups = audit_options(group_by, bands, min_group, max_gap)
    if (scores_path is None) == (manifest is None):
        raise click.UsageError("give either --scores VAL.parquet or --manifest CSV --models ...")
    manifest_options = {
        "label_column": label_column,
        "path_column": path_column,
        "root": root,
        "faces": faces,
    }
    manifest_options = {k: v for k, v in manifest_options.items() if v is not None}
    if manifest is not None:
        scores_out = scores_out or out.with_suffix(".scores")
        scores = _scores_of_manifest(manifest, model_paths, scores_out, manifest_options, groups)
    else:
        if model_paths or scores_out or manifest_options:
            raise click.UsageError(
                "--models, --scores-out, --label-column, --path-column and --root go with "
                "--manifest; --scores is already scored"
            )
        scores = read_scores(scores_path, _storage(storage_options))
    result = run_tune(
        scores,
        objective=objective,
        method=method,
        positive=positive,
        calibration=calibration,
        cv=cv,
        seed=seed,
        n_boot=n_boot,
        groups=groups,
    )
    result.spec.save(out)
    _print_tuned(result, out, report)


def _scores_of_manifest(
    manifest: Path,
    model_paths: tuple[Path, ...],
    scores_out: Path,
    manifest_options: dict[str, Any],
    groups: Any,
) -> Any:
    """Score a labeled manifest with the models (``tune --manifest``) and read the scores."""
    from ensemble.scores import read_scores

    if not model_paths:
        raise click.UsageError("--manifest needs the models to score it: add --models A.onnx")
    if groups is not None:
        _check_manifest_columns(manifest, groups.group_by)
        manifest_options["keep_columns"] = list(groups.group_by)
    return read_scores(_score_manifest(manifest, model_paths, scores_out, manifest_options))


def _print_tuned(result: Any, out: Path, report: Path | None) -> None:
    """What tune chose and how it does on validation; the report page, if asked for."""
    spec = result.spec
    content = spec.content
    val = content["validation"]
    console = _console()
    if val["rows"]["dropped_not_ok"]:
        console.print(
            f"dropped {val['rows']['dropped_not_ok']} of {val['rows']['total']} rows whose "
            "status is not ok"
        )
    _print_selection(console, content["selection"])
    _print_metrics(console, val["ensemble"], val["models"], result.data.ordered_classes, spec)
    if "groups" in val:
        _print_groups(console, val["groups"], result.data.ordered_classes)
    console.print(
        f"threshold {spec.threshold:.6g} for {spec.objective}{_gap_text(content)} "
        f"({content['selection']['value']} {val['ensemble']['objective_value']:.4f}); "
        f"ensemble {spec.version} -> {out}"
    )
    if report is not None:
        page = write_command_report(
            report, result.data, result.p_ensemble, spec, val, "ensemble tune", result.groupings
        )
        console.print(f"report -> {page}")


def _gap_text(content: dict) -> str:
    """`` with FAR gap <= 0.02 by race (0.018; unconstrained ...)`` or nothing."""
    limit = content.get("max_gap")
    if not limit:
        return ""
    got = content["validation"]["gap_constraint"]
    rate = limit["rate"].upper()
    gaps = ", ".join(f"{c} {g:.4f}" for c, g in got["gaps"].items())
    free = got["unconstrained"]
    free_gaps = ", ".join(f"{c} {g:.4f}" for c, g in free["gaps"].items())
    return (
        f" with {rate} gap <= {limit['limit']:g} (gap {gaps}; without the ceiling: threshold "
        f"{free['threshold']:.6g}, value {free['value']:.4f}, gap {free_gaps})"
    )


def _check_manifest_columns(manifest: Path, columns: tuple[str, ...]) -> None:
    from scoring.manifest import read_header

    names = read_header(manifest)
    missing = [c for c in columns if c not in names]
    if missing:
        raise UsageError(
            f"--group-by {missing[0]}: manifest {manifest} has no such column "
            f"(its columns: {', '.join(names)})"
        )


def _score_manifest(
    manifest: Path, models: tuple[Path, ...], out: Path, options: dict
) -> list[Path]:
    try:
        from scoring.run import score_manifest
    except ImportError as exc:
        raise GenderscoreError(
            f"scoring.run.score_manifest is not available ({exc}); score with "
            "'genderscore scoring run' and pass --scores"
        ) from None
    result = score_manifest(manifest, models=[str(m) for m in models], out=out, **options)
    files = [Path(f) for f in result.parquet_files]
    if not files:
        raise GenderscoreError(f"scoring {manifest} wrote no Parquet files")
    return files


@cli.command()
@click.option(
    "--ensemble",
    "ensemble_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The ensemble.json written by 'ensemble tune'.",
)
@click.option(
    "--scores",
    "scores_path",
    required=True,
    help="Scores (Parquet file or folder, or an s3://, gs:// URI of one) from 'scoring run' "
    "with the ensemble's models.",
)
@storage_option_flag("--scores")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Decided Parquet: the scores plus p_ensemble, label, threshold, ensemble_version.",
)
@click.option(
    "--submission",
    type=click.Path(path_type=Path),
    help="A Kaggle-style sample submission CSV (id column, label column) to fill in.",
)
@click.option(
    "--submission-out",
    type=click.Path(path_type=Path),
    help="Where to write the filled-in submission (needed with --submission).",
)
def apply(
    ensemble_path: Path,
    scores_path: str,
    storage_options: tuple[str, ...],
    out: Path,
    submission: Path | None,
    submission_out: Path | None,
) -> None:
    """Apply an ensemble to scores: probability and class for every ok row."""
    from ensemble.apply import decide_table, write_table
    from ensemble.apply import submission as make_submission
    from ensemble.scores import read_scores
    from scoring.ensemble_spec import EnsembleSpec

    if (submission is None) != (submission_out is None):
        raise click.UsageError("--submission and --submission-out go together: give both")
    spec = EnsembleSpec.load(ensemble_path)
    scores = read_scores(scores_path, _storage(storage_options))
    table = decide_table(spec, scores)
    sub = make_submission(submission, table, spec) if submission is not None else None
    write_table(table, out)
    labels = table.column("label").to_pylist()
    counts = {c: labels.count(c) for c in spec.class_names}
    console = _console()
    console.print(
        f"{len(labels)} rows, {sum(counts.values())} decided "
        f"({', '.join(f'{c} {n}' for c, n in counts.items())}), "
        f"{labels.count(None)} without a decision (scoring errors); ensemble {spec.version} -> {out}"
    )
    if sub is not None:
        submission_out.parent.mkdir(parents=True, exist_ok=True)
        sub.to_csv(submission_out, index=False)
        console.print(f"submission ({len(sub)} rows, as {submission.name}) -> {submission_out}")


@cli.command()
@click.option(
    "--ensemble",
    "ensemble_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The ensemble.json written by 'ensemble tune'.",
)
@click.option(
    "--scores",
    "scores_path",
    required=True,
    help="Labeled test scores (true_label column) the threshold never saw (a path or an "
    "s3://, gs:// URI).",
)
@storage_option_flag("--scores")
@click.option("--out", type=click.Path(path_type=Path), help="Also write the metrics as JSON.")
@click.option(
    "--report", type=click.Path(path_type=Path), help="Write an HTML report with figures here."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the bootstrap.")
@click.option(
    "--n-boot",
    type=click.IntRange(min=100),
    default=2000,
    show_default=True,
    help="Bootstrap replicates for the 95% confidence intervals.",
)
@_group_options
def evaluate(
    ensemble_path: Path,
    scores_path: str,
    storage_options: tuple[str, ...],
    out: Path | None,
    report: Path | None,
    seed: int,
    n_boot: int,
    group_by: tuple[str, ...],
    bands: tuple[str, ...],
    min_group: int,
) -> None:
    """Evaluate an ensemble on labeled test scores: does its target hold on unseen data?"""
    from ensemble.evaluation import evaluate as run_evaluate
    from ensemble.groups import audit_options
    from ensemble.scores import read_scores
    from models.jsonable import jsonable
    from scoring.ensemble_spec import EnsembleSpec

    groups = audit_options(group_by, bands, min_group)
    spec = EnsembleSpec.load(ensemble_path)
    scores = read_scores(scores_path, _storage(storage_options))
    result = run_evaluate(spec, scores, n_boot=n_boot, seed=seed, groups=groups)
    summary = result.summary
    console = _console()
    if summary["rows"]["dropped_not_ok"]:
        console.print(
            f"dropped {summary['rows']['dropped_not_ok']} of {summary['rows']['total']} rows "
            "whose status is not ok"
        )
    _print_metrics(
        console, summary["ensemble"], summary["models"], result.data.ordered_classes, spec
    )
    if "groups" in summary:
        _print_groups(console, summary["groups"], result.data.ordered_classes)
    console.print(_target_line(summary["target"]))
    if summary.get("gap_target"):
        console.print(_gap_target_line(summary["gap_target"]))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n")
        console.print(f"metrics -> {out}")
    if report is not None:
        page = write_command_report(
            report,
            result.data,
            result.p_ensemble,
            spec,
            summary,
            "ensemble evaluate",
            result.groupings,
        )
        console.print(f"report -> {page}")


def _target_line(target: dict) -> str:
    if not target:
        return "the ensemble records no objective"
    name = target["objective"]
    if "held" in target:
        rate = name.split("=")[0]
        ci = target["ci"]
        verdict = "held" if target["held"] else "MISSED"
        sure = (
            " (and its 95% CI is within the target)" if target["held_with_95pct_confidence"] else ""
        )
        return (
            f"target {name}: {verdict}{sure}: {rate.upper()} {target[rate]:.4f} "
            f"[{ci['low']:.4f}, {ci['high']:.4f}] here, {target['validation']:.4f} on validation"
        )
    val = target.get("validation")
    val_text = f", {val:.4f} on validation" if val is not None else ""
    return f"objective {name}: {target['value']:.4f} here{val_text}"


def _gap_target_line(target: dict) -> str:
    """``gap ceiling far=0.04 (set on validation): race held (0.031 here, 0.039 on validation)``"""
    parts = []
    for column, c in target["by"].items():
        if c["held"] is None:
            parts.append(f"{column} n/a here (fewer than two groups to compare)")
            continue
        verdict = "held" if c["held"] else "MISSED"
        parts.append(
            f"{column} {verdict} ({c['gap']:.4f} here, {c['validation']:.4f} on validation)"
        )
    if not parts:
        return f"gap ceiling {target['max_gap']}: group by its columns to check it here"
    return f"gap ceiling {target['max_gap']} (set on validation): {'; '.join(parts)}"


def _print_selection(console: Console, sel: dict) -> None:
    table = Table(title=f"methods by cross-validated {sel['value']} ({sel['cv_folds']} folds)")
    table.add_column("method")
    table.add_column(sel["value"], justify="right")
    for r in sel["results"]:
        mark = " <- chosen" if r["method"] == sel["chosen"] else ""
        table.add_row(r["method"] + mark, f"{r['cv_value']:.4f}")
    console.print(table)


def _print_metrics(console: Console, ensemble: dict, models: dict, classes, spec) -> None:
    from ensemble.summary import ci_rows, metric_rows

    _print_rows(
        console,
        f"metrics (positive: {spec.positive_class})",
        metric_rows(ensemble, models, classes, spec.threshold),
    )
    _print_rows(
        console, "ensemble at its threshold, 95% bootstrap CI", ci_rows(ensemble["ci"], classes)
    )


def _print_rows(console: Console, title: str, rows: list[dict], section_by: str = "") -> None:
    """A rich table of ``rows``; a line between runs of equal ``section_by`` values."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    table = Table(title=title)
    for c in cols:
        left = c in ("model", "metric", "group") or c.endswith(("worst", "best"))
        table.add_column(c, justify="left" if left else "right")
    for i, r in enumerate(rows):
        if section_by and i and r[section_by] != rows[i - 1][section_by]:
            table.add_section()
        table.add_row(*[_cell(r.get(c, "")) for c in cols])
    console.print(table)


def _print_groups(console: Console, block: dict, classes) -> None:
    from ensemble.summary import gap_rows, group_notes, group_rows

    for column, by in block["by"].items():
        _print_rows(
            console,
            f"by {column}: each model at its threshold, 95% bootstrap CI (within group)",
            group_rows(by, classes),
            section_by="model",
        )
        _print_rows(console, f"gaps by {column}: worst minus best group", gap_rows(by))
        for note in group_notes(by):
            console.print(f"  {note}")


def _cell(v) -> str:
    if isinstance(v, float):
        return "n/a" if np.isnan(v) else f"{v:.4f}"
    return str(v)


def write_command_report(
    out_dir: Path, data, p_ensemble, spec, block: dict, what: str, groupings=()
) -> Path:
    """The HTML report of ``ensemble tune`` (``block`` = the spec's ``validation``) or
    ``ensemble evaluate`` (its summary), as ``what`` names; also used by ``genderscore demo``.
    ``groupings``: the :class:`ensemble.groups.Grouping` of each column of ``block["groups"]``."""
    from ensemble.report import write_report
    from ensemble.summary import ci_rows, metric_rows

    classes = data.ordered_classes
    scores = {m["name"]: data.X[:, j] for j, m in enumerate(data.models)}
    scores["ensemble"] = p_ensemble
    facts = {
        "ensemble version": spec.version,
        "method": spec.method,
        "calibration": spec.calibration,
        "objective": spec.objective or "",
        "threshold": f"{spec.threshold:.6g}",
        "positive class": spec.positive_class,
        "rows used": f"{len(data.y)} of {data.n_total} ({data.n_dropped} not ok, dropped)",
        "label counts": ", ".join(f"{k} {v}" for k, v in data.fingerprint["label_counts"].items()),
        "data SHA-256": data.fingerprint["sha256"],
    }
    if "target" in block and block["target"]:
        facts["target"] = _target_line(block["target"])
    tables = {
        "Metrics": metric_rows(block["ensemble"], block["models"], classes, spec.threshold),
        "Ensemble at its threshold, 95% bootstrap intervals": ci_rows(
            block["ensemble"]["ci"], classes
        ),
    }
    sel = spec.content.get("selection")
    if what == "ensemble tune" and sel:
        heading = f"Methods by cross-validated {sel['value']} ({sel['cv_folds']} folds)"
        tables[heading] = [
            {
                "method": r["method"],
                sel["value"]: r["cv_value"],
                "chosen": "yes" if r["method"] == sel["chosen"] else "",
            }
            for r in sel["results"]
        ]
    if spec.content.get("max_gap"):
        facts["gap ceiling (on validation)"] = _gap_text(spec.content).removeprefix(" with ")
    if "groups" in block:
        tables |= _group_tables(block["groups"], classes)
    by = block.get("groups", {}).get("by", {})
    return write_report(
        out_dir,
        title=f"{what}: {spec.method} ensemble of {', '.join(m.name for m in spec.models)}",
        y=data.y,
        scores=scores,
        threshold=spec.threshold,
        class_names=classes,
        tables=tables,
        facts=facts,
        groups={g.column: (g.labels, by[g.column]) for g in groupings if g.column in by},
    )


def _group_tables(block: dict, classes) -> dict[str, list[dict]]:
    from ensemble.summary import gap_rows, group_notes, group_rows

    tables = {}
    for column, by in block["by"].items():
        tables[f"By {column}: each model at its threshold, 95% bootstrap intervals"] = group_rows(
            by, classes
        )
        tables[f"Gaps by {column}: worst minus best group"] = gap_rows(by)
        tables[f"Notes on {column}"] = [{"note": n} for n in group_notes(by)]
    return tables
