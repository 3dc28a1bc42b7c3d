"""`genderscore scoring` commands."""

from __future__ import annotations

import logging
from collections.abc import Callable

import click
from click.core import ParameterSource

from models.errors import GenderscoreError, RunStopped, UsageError
from models.framing import FACE_MODES
from scoring.options import DEFAULT_BATCH_SIZE, DEFAULT_STALL_TIMEOUT
from scoring.storage import DEFAULT_READ_CONCURRENCY, DEFAULT_READ_TIMEOUT

log = logging.getLogger("scoring")


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager: the file's values become defaults, so flags given on the command line win."""
    if value is not None:
        from scoring.config import read_config

        ctx.default_map = {**(ctx.default_map or {}), **read_config(value, ctx.command)}
    return value


def storage_option_flag(what: str) -> Callable[[Callable], Callable]:
    """``--storage-option KEY=VALUE`` (repeated), for the commands that read or write URIs."""
    return click.option(
        "--storage-option",
        "storage_options",
        multiple=True,
        metavar="KEY=VALUE",
        help=f"An option of pyarrow's S3 or GCS file system for s3:// and gs:// URIs ({what}), "
        "e.g. endpoint_override=http://127.0.0.1:9000 or region=eu-west-1; repeat for more. "
        "Credentials come from the AWS/GCP environment. See docs/object-storage.md.",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Score a manifest of images with ONNX models on Ray, into Parquet."""


@cli.command("run")
@click.option(
    "--config",
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    metavar="FILE.toml",
    help="Read options from a TOML file: each option under its long name with underscores "
    "(batch_size = 16); relative paths are relative to the file; flags override it.",
)
@click.option(
    "--manifest",
    required=True,
    help="CSV or Parquet manifest with one image per row (local path or s3://, gs://, file:// URI).",
)
@storage_option_flag("manifest, images, --out")
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
    help="Output root (a folder or an s3://, gs:// prefix): each run goes to "
    "OUT/run_date=YYYY-MM-DD/ (part-*.parquet, _manifest.json, _summary.json, _SUCCESS), "
    "which appears complete or not at all.",
)
@click.option(
    "--run-date",
    default=None,
    metavar="YYYY-MM-DD",
    help="The date folder to write. Default: today (this machine's local date).",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="Leave out rows whose id another committed date (earlier or later) scored ok with the "
    "same ensemble version (or models): each id is scored once; needs --id-column.",
)
@click.option(
    "--max-error-rate",
    type=float,
    default=None,
    metavar="F",
    help="Exit with code 3 (after committing) when more than this fraction of the rows are errors.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text or as JSON objects, one per line; both carry the run id.",
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
    "--rows-per-file",
    type=int,
    default=None,
    help="Rows per output Parquet file (at least): also the most work a crash can lose per "
    "writer. Default 5000.",
)
@click.option(
    "--stall-timeout",
    type=float,
    default=DEFAULT_STALL_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Fail (exit 1, parts kept for the rerun) when no row is scored and no file written for "
    "this long, e.g. after a lost Ray node; 0: wait forever.",
)
@click.option(
    "--read-timeout",
    type=float,
    default=DEFAULT_READ_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="An object-store image not read within this long becomes a 'timeout' error row.",
)
@click.option(
    "--read-concurrency",
    type=int,
    default=DEFAULT_READ_CONCURRENCY,
    show_default=True,
    help="Object-store images each scorer actor fetches at once, per batch.",
)
@click.option(
    "--faces",
    type=click.Choice(FACE_MODES),
    default=None,
    help="Face framing for every model: off (whole images), align (the main face aligned; "
    "the whole image when none is found), require (no face: a no_face error row). Default: "
    "each model's own, as it was trained.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Score the date again even if it is already committed (replaced in one step).",
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
    run_date: str | None,
    incremental: bool,
    max_error_rate: float | None,
    log_format: str,
    ray_address: str | None,
    batch_size: int,
    num_workers: int | None,
    worker_threads: int,
    path_column: str,
    id_column: str | None,
    label_column: str | None,
    keep_columns: tuple[str, ...],
    root: str | None,
    rows_per_file: int | None,
    stall_timeout: float,
    storage_options: tuple[str, ...],
    read_timeout: float,
    read_concurrency: int,
    faces: str | None,
    force: bool,
    progress: bool,
    more_models: tuple[str, ...],
) -> None:
    """Score every row of a manifest into OUT/run_date=YYYY-MM-DD: one Parquet row per
    manifest row, bad images included. A committed date is not scored again (unless --force);
    a crashed one resumes."""
    all_models, ensemble = _models_or_ensemble(models, more_models, ensemble)
    _configure_logs(log_format)
    options = {
        "ray_address": ray_address,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "worker_threads": worker_threads,
        "path_column": path_column,
        "id_column": id_column,
        "label_column": label_column,
        "keep_columns": keep_columns,
        "root": root,
        "stall_timeout": stall_timeout,
        "storage_options": storage_options,
        "read_timeout": read_timeout,
        "read_concurrency": read_concurrency,
        "faces": faces,
        "force": force,
        # progress bars are not log lines: none with JSON logs
        "progress": progress and log_format == "text",
    }
    if rows_per_file is not None:
        options["rows_per_file"] = rows_per_file
    try:
        _run_nightly(manifest, all_models, ensemble, out, run_date, incremental,
                     max_error_rate, log_format, options)  # fmt: skip
    except GenderscoreError as exc:
        _report(exc, log_format)


def _models_or_ensemble(
    models: tuple[str, ...], more_models: tuple[str, ...], ensemble: str | None
) -> tuple[list[str], str | None]:
    """The model files and the ensemble file the command line and config file name."""
    ctx = click.get_current_context()
    if more_models and not models:
        raise click.UsageError(
            f"unexpected argument(s) {' '.join(more_models)}: model files go after --models"
        )
    # `--models a.onnx b.onnx`: click gives the first to --models, the rest arrive here.
    all_models = [*models, *more_models]
    # A flag overrides the config file also across the either-or of --models / --ensemble.
    from_file = ParameterSource.DEFAULT_MAP
    if ensemble and all_models and ctx.get_parameter_source("models") == from_file:
        all_models = []
    elif ensemble and all_models and ctx.get_parameter_source("ensemble") == from_file:
        ensemble = None
    return all_models, ensemble


def _configure_logs(log_format: str) -> None:
    from scoring.internal import logs

    logs.configure(log_format)
    if log_format == "json":
        logs.wrap_std_fds()  # Ray's C++ lines and printed messages too
    else:
        logs.filter_native_stderr()  # Ray's C++ core writes to fd 2 directly
    logs.set_run_id(None)


def _report(exc: GenderscoreError, log_format: str) -> None:
    """A failed or stopped run: one JSON record and its exit code, or the error (re-raised)
    with the run id to look up, for the root command to print."""
    from scoring.internal import logs

    run_id = logs.current_run_id()
    message = " ".join(str(exc).split())
    if log_format == "json":
        stopped = isinstance(exc, RunStopped)
        log.log(
            logging.WARNING if stopped else logging.ERROR,
            message,
            extra={"event": "stopped" if stopped else "error", "exit_code": exc.exit_code},
        )
        raise click.exceptions.Exit(exc.exit_code) from None
    if run_id is not None and not isinstance(exc, UsageError):
        # a failed run or an error rate: name the run whose logs and staging to look at
        exc.args = (f"{message} [run {run_id}]",)
        raise exc from None
    raise exc


def _run_nightly(
    manifest: str,
    models: list[str],
    ensemble: str | None,
    out: str,
    run_date: str | None,
    incremental: bool,
    max_error_rate: float | None,
    log_format: str,
    options: dict,
) -> None:
    from rich.console import Console

    from scoring.internal import logs
    from scoring.layout import new_run_id
    from scoring.nightly import check_error_rate, check_max_error_rate, expected_run_id, run_nightly
    from scoring.summary import format_summary

    check_max_error_rate(max_error_rate)
    # Every line carries the run id, also those before the run's folder is locked.
    run_id = expected_run_id(out, run_date) if "://" not in out else None
    new_id = new_run_id()
    logs.set_run_id(run_id or new_id)
    result = run_nightly(
        manifest,
        models=models or None,
        ensemble=ensemble,
        out=out,
        run_date=run_date,
        incremental=incremental,
        run_id=new_id,
        **options,
    )
    if log_format == "json":
        what = "already committed: nothing to do" if result.skipped else "committed"
        log.info("%s %s", result.out, what, extra={"event": "summary", "summary": result.summary})
    else:
        console = Console(highlight=False, soft_wrap=True)
        if result.skipped:
            console.print(
                f"{result.out} is already committed (run {result.summary.get('run_id')}): "
                "nothing to do; --force scores it again",
                markup=False,
            )
        else:
            for line in format_summary(result.summary):
                console.print(line, markup=False)
    if max_error_rate is not None:
        check_error_rate(result, max_error_rate)
