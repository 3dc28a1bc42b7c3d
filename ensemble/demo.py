"""``genderscore demo``: the whole pipeline on a small embedded default, one line per step.

The work is :func:`ensemble.demo_run.run_demo`; this module is its command line: options,
quiet stage logs, and the lines the user reads.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ensemble.demo_run import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_IMAGES,
    DEMO_BACKBONES,
    DemoConfig,
    DemoResult,
    Progress,
    Step,
    run_demo,
)
from models.errors import RunStopped
from models.framing import FACE_MODES

# TensorFlow's C++ start-up chatter would drown the demo's own lines (set before TF loads).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Loggers whose lines the demo's one line per step replaces (--verbose keeps them): the
#: stages' INFO lines, and the libraries' warnings too (retracing notes, Ray's token notice).
QUIET_LOGGERS = {
    "models": logging.WARNING,
    "convert": logging.WARNING,
    "scoring": logging.WARNING,
    "ensemble": logging.WARNING,
    "tensorflow": logging.ERROR,
    "tf2onnx": logging.ERROR,
    "absl": logging.ERROR,
    "ray": logging.ERROR,
    "ray.data": logging.ERROR,
}


class _Lines(Progress):
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.title = ""

    def start(self, index: int, total: int, title: str) -> None:
        self.title = title
        width = len(str(total))
        click.echo(f"[{index:>{width}}/{total}] {title} ...", nl=self.verbose)

    def end(self, index: int, total: int, step: Step) -> None:
        click.echo(f"{' ' * 4 if self.verbose else ' '}{step.detail} ({step.seconds:.1f} s)")


@contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Stage loggers at WARNING for the run, restored afterwards (the demo may run in-process)."""
    if verbose:
        yield
        return
    import ray.data  # noqa: F401  (it configures its loggers on import: quiet them after)

    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Silence file descriptor 2 itself: TensorFlow's C++ start-up lines (oneDNN, CUDA probes)
    are written before absl logging is initialised, where TF_CPP_MIN_LOG_LEVEL does not reach."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _load_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices once, up front, with its start-up lines hidden
    (an import error is still raised, with its message)."""
    with _stderr_to_devnull():
        import tensorflow as tf

        tf.config.list_physical_devices()


def _backbones(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(b.strip() for b in value.split(",") if b.strip())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("genderscore-demo"),
    show_default=True,
    help="Demo folder. A previous demo there is refused unless --force.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Delete a previous demo in --out and start afresh (never a folder that holds no demo).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="A real labeled folder with train/<class>/ and val/<class>/ (and optionally test/) "
    "instead of synthetic images, e.g. ../shared/data/utkface.",
)
@click.option(
    "--images",
    "--max-images",
    "images",
    type=int,
    default=DEFAULT_IMAGES,
    show_default=True,
    help="Training images per class: generated, or sampled at most from --data. Validation "
    "and test take half as many each (at least 10).",
)
@click.option(
    "--image-size",
    type=int,
    default=DEFAULT_IMAGE_SIZE,
    show_default=True,
    help="Square input size of every model, in px (32-224).",
)
@click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True)
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option(
    "--backbones",
    default=",".join(DEMO_BACKBONES),
    show_default=True,
    callback=_backbones,
    help="Comma-separated backbones to train and combine.",
)
@click.option(
    "--objective",
    default="eer",
    show_default=True,
    help="Threshold objective for 'ensemble tune': eer, far=X, frr=X, macro-f1, ...",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--n-boot",
    type=click.IntRange(min=100),
    default=1000,
    show_default=True,
    help="Bootstrap replicates for the confidence intervals.",
)
@click.option("--num-workers", type=int, help="Scorer actors (default: one per CPU).")
@click.option(
    "--faces",
    type=click.Choice(FACE_MODES),
    default="off",
    show_default=True,
    help="Face framing to train and score with (align, require): needs --data of real photos.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also show every stage's own log lines.")
def demo(
    out: Path,
    force: bool,
    data: Path | None,
    images: int,
    image_size: int,
    epochs: int,
    batch_size: int,
    backbones: tuple[str, ...],
    objective: str,
    seed: int,
    n_boot: int,
    num_workers: int | None,
    faces: str,
    verbose: bool,
) -> None:
    """Run the whole pipeline on a small default: images -> train three backbones (from
    scratch, small inputs) -> ONNX -> score validation on Ray -> tune the ensemble -> score a
    manifest into Parquet with it. Synthetic images unless --data."""
    cfg = DemoConfig(
        out=out,
        data=data,
        images=images,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        backbones=backbones,
        objective=objective,
        seed=seed,
        force=force,
        n_boot=n_boot,
        num_workers=num_workers,
        ray_logs=verbose,
        faces=faces,
    )
    from ensemble.demo_run import check_demo_config

    started = time.perf_counter()
    check_demo_config(cfg)  # a bad option is one line before anything is printed
    if data is None:
        click.echo(
            f"genderscore demo -> {out}: on SYNTHETIC images (generated drawn faces, not real "
            "people; --data DIR uses a real labeled folder)"
        )
    else:
        click.echo(f"genderscore demo -> {out}: on a sample of the real images in {data}")
    if not verbose:
        t0 = time.perf_counter()
        click.echo("loading TensorFlow ...", nl=False)
        _load_tensorflow_quietly()
        click.echo(f" ({time.perf_counter() - t0:.1f} s)")
    lines = _Lines(verbose)
    with _quiet(verbose):
        try:
            result = run_demo(cfg, lines)
        except RunStopped as exc:
            # A scoring step stopped cleanly on SIGTERM/SIGINT; a demo is not resumed.
            if not verbose:
                click.echo()  # end the step's line
            name = signal.Signals(exc.signum).name
            raise RunStopped(
                f"demo stopped by {name} in step '{lines.title}'; {out} is incomplete: rerun "
                "with --force to start afresh",
                exc.signum,
            ) from None
    _print_result(result, time.perf_counter() - started)


def _print_result(r: DemoResult, seconds: float) -> None:
    f = r.figures
    val = ", ".join(f"{name} {auc:.3f}" for name, auc in f["val_auc"].items())
    test = ", ".join(f"{name} {auc:.3f}" for name, auc in f["test_auc"].items())
    what = "SYNTHETIC images" if r.data.synthetic else f"images sampled from {r.data.source}"
    click.echo(f"done in {seconds:.1f} s, on {what}")
    click.echo(f"  val AUC (ensemble tuned here):  {val}")
    click.echo(
        f"  {f['method']} ensemble, threshold {f['threshold']:.4g} for {f['objective']}; "
        f"test: {f['rows_scored']} of {f['rows']} rows scored into Parquet at "
        f"{f['images_per_s'] or 0:.1f} img/s, ensemble accuracy {f['test_accuracy']:.3f}"
    )
    click.echo(f"  test AUC:                       {test}")
    click.echo(f"  report:   {r.report}")
    click.echo(f"  parquet:  {r.scores}")
    click.echo(f"  summary:  {r.summary}")
    click.echo(f"  ensemble: {r.ensemble}; step times and figures: {r.out / 'demo.json'}")
