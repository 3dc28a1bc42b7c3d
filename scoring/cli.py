"""`genderscore scoring` commands."""

from __future__ import annotations

import click

from scoring.options import DEFAULT_BATCH_SIZE


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Score a manifest of images with ONNX models on Ray, into Parquet."""


@cli.command("run")
@click.option(
    "--manifest",
    required=True,
    help="CSV or Parquet manifest with one image per row (local path or s3://, gs://, file:// URI).",
)
@click.option(
    "--models",
    multiple=True,
    help="ONNX models made by 'genderscore convert': --models a.onnx b.onnx c.onnx.",
)
@click.option(
    "--ensemble",
    help="ensemble.json from 'genderscore ensemble tune': scores with its models and adds "
    "p_ensemble, label, threshold and ensemble_version.",
)
@click.option(
    "--out",
    required=True,
    help="Output folder; it appears complete (part-*.parquet, _summary.json, _SUCCESS) or not at all.",
)
@click.option(
    "--ray-address",
    default=None,
    help="Join a running Ray cluster: 'auto' or ray://HOST:10001. Default: start Ray on this machine.",
)
@click.option(
    "--batch-size",
    type=int,
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Images per batch for decoding and ONNX Runtime.",
)
@click.option(
    "--num-workers",
    type=int,
    default=None,
    help="Scorer actors (each holds one ONNX Runtime session per model). Default: one per CPU.",
)
@click.option(
    "--worker-threads",
    type=int,
    default=1,
    show_default=True,
    help="ONNX Runtime intra-op threads per actor.",
)
@click.option(
    "--path-column", default="path", show_default=True, help="Manifest column with image paths."
)
@click.option(
    "--id-column",
    default=None,
    help="Manifest column copied to the output's id (default: the path as the manifest spells it).",
)
@click.option(
    "--label-column",
    default=None,
    help="Manifest column with true labels, kept as true_label (default: 'label' if there is one).",
)
@click.option(
    "--keep-columns",
    multiple=True,
    help="Manifest columns copied to the output as they are (comma-separated or repeated).",
)
@click.option(
    "--root",
    default=None,
    help="Only read images inside this folder (or URI prefix); other paths become outside_root rows.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an output folder that already holds a committed run.",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show Ray Data's progress bars while scoring.",
)
@click.argument("more_models", nargs=-1, metavar="")
def run(
    manifest: str,
    models: tuple[str, ...],
    ensemble: str | None,
    out: str,
    ray_address: str | None,
    batch_size: int,
    num_workers: int | None,
    worker_threads: int,
    path_column: str,
    id_column: str | None,
    label_column: str | None,
    keep_columns: tuple[str, ...],
    root: str | None,
    force: bool,
    progress: bool,
    more_models: tuple[str, ...],
) -> None:
    """Score every row of a manifest: one Parquet row per manifest row, bad images included."""
    from rich.console import Console

    from scoring.run import score_manifest
    from scoring.summary import format_summary

    if more_models and not models:
        raise click.UsageError(
            f"unexpected argument(s) {' '.join(more_models)}: model files go after --models"
        )
    # `--models a.onnx b.onnx`: click gives the first to --models, the rest arrive here.
    all_models = [*models, *more_models]
    result = score_manifest(
        manifest,
        models=all_models or None,
        ensemble=ensemble,
        out=out,
        ray_address=ray_address,
        batch_size=batch_size,
        num_workers=num_workers,
        worker_threads=worker_threads,
        path_column=path_column,
        id_column=id_column,
        label_column=label_column,
        keep_columns=keep_columns,
        root=root,
        force=force,
        progress=progress,
    )
    console = Console(highlight=False, soft_wrap=True)
    if result.skipped:
        console.print(
            f"{result.out} already holds this run's committed output "
            f"(run {result.summary.get('run_id')}): nothing to do; --force scores again"
        )
        return
    for line in format_summary(result.summary):
        console.print(line, markup=False)
