"""`genderscore models` commands: train, evaluate, predict.

TensorFlow is imported only when a command runs, so ``--help`` is instant.
"""

from __future__ import annotations

import json
import os

import click

from models.data import BAD_IMAGE_POLICIES
from models.framing import FACE_MODES
from models.preprocessing import PREPROCESSING
from models.registry import BACKBONE_NAMES, HEADS
from models.schedules import LR_SCHEDULES

_PREPROCESS_HELP = (
    "Preprocessing the model was trained with (mobilenet_v2: x/127.5-1; resnet50: caffe,"
    " BGR minus ImageNet mean; efficientnet and none: raw 0..255; rescale: x/255). Default:"
    " what run.json beside the model records; required for any other model."
)


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Build, train, evaluate and predict with Keras gender classifiers."""


@cli.command()
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=str),
    help="Labeled images: a folder with train/<class>/ (and val/<class>/), a folder of"
    " <class>/ folders, or a CSV with path,label (paths relative to the CSV; optional split"
    " column train/val).",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="RUN_DIR to write model.keras, history.csv, curves.png and run.json into.",
)
@click.option(
    "--backbone",
    type=click.Choice(BACKBONE_NAMES),
    default="mobilenetv2",
    show_default=True,
    help="Pretrained feature extractor (Keras application).",
)
@click.option(
    "--image-size",
    default=None,
    help="Input size N or HxW (height x width). Default: the backbone's (224).",
)
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="Base weights: 'imagenet' (downloaded by Keras), 'none' (random, train from"
    " scratch) or the path of a weights file (.h5/.weights.h5) for the base network.",
)
@click.option(
    "--epochs",
    type=int,
    default=10,
    show_default=True,
    help="Epochs to train (the head, with pretrained weights; everything, from scratch).",
)
@click.option(
    "--fine-tune-epochs",
    type=int,
    default=None,
    help="Epochs of the fine-tuning phase (pretrained weights only). Default: --epochs; 0"
    " skips it.",
)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per batch.")
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Learning rate (Adam) of the first phase. Default: 1e-3.",
)
@click.option(
    "--fine-tune-lr",
    type=float,
    default=None,
    help="Learning rate of the fine-tuning phase. Default: --lr / 10.",
)
@click.option(
    "--fine-tune-layers",
    type=int,
    default=None,
    help="Top layers of the base unfrozen in phase 2 (BatchNormalization stays frozen)."
    " Default: per backbone (30 MobileNetV2/EfficientNetB0, 20 ResNet50); 0 skips phase 2.",
)
@click.option(
    "--loss",
    type=click.Choice(["bce", "focal"]),
    default="bce",
    show_default=True,
    help="Binary cross-entropy or binary focal loss.",
)
@click.option(
    "--focal-alpha",
    type=float,
    default=0.25,
    show_default=True,
    help="Focal loss weight of the positive class, in (0, 1).",
)
@click.option(
    "--focal-gamma",
    type=float,
    default=2.0,
    show_default=True,
    help="Focal loss focusing exponent (0 = weighted cross-entropy).",
)
@click.option(
    "--label-smoothing",
    type=float,
    default=0.0,
    show_default=True,
    help="Binary cross-entropy targets moved this far towards 0.5 (bce only).",
)
@click.option(
    "--class-weight",
    type=click.Choice(["none", "balanced"]),
    default="none",
    show_default=True,
    help="Weight the loss by inverse class frequency ('balanced', as scikit-learn computes).",
)
@click.option(
    "--oversample/--no-oversample",
    default=False,
    show_default=True,
    help="Draw both classes equally often in each training epoch.",
)
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Random flip, rotation, zoom, shift, shear and brightness on training batches (in"
    " tf.data, not inside the saved model).",
)
@click.option(
    "--photo-augment/--no-photo-augment",
    default=False,
    show_default=True,
    help="JPEG, resolution, blur and colour degradations of photos, added to --augment.",
)
@click.option(
    "--mixup",
    type=float,
    default=0.0,
    show_default=True,
    metavar="ALPHA",
    help="Mixup of training batches: pairs of images and their targets blended with a"
    " Beta(ALPHA, ALPHA) weight (e.g. 0.2; 0 = off).",
)
@click.option(
    "--val-split",
    type=float,
    default=0.2,
    show_default=True,
    help="Share held out (stratified) for validation when the data has no val part.",
)
@click.option(
    "--positive",
    default=None,
    help="Class whose probability the model outputs. Default: the second class name in"
    " sorted order (male for female/male).",
)
@click.option(
    "--preprocess",
    "preprocessing",
    type=click.Choice(PREPROCESSING),
    default=None,
    help="Override the backbone's preprocessing (recorded in run.json).",
)
@click.option(
    "--head",
    type=click.Choice(list(HEADS)),
    default=None,
    help="Classification head: 'dense' (Dense -> Dropout -> sigmoid) or 'dense128-64'"
    " (Dense 128 -> Dropout -> Dense 64 -> sigmoid). Default: per backbone.",
)
@click.option(
    "--head-units",
    default=None,
    help="Hidden Dense sizes of the head, comma-separated (e.g. 256 or 128,64).",
)
@click.option("--dropout", type=float, default=None, help="Head dropout rate. Default: 0.5.")
@click.option(
    "--bn-momentum",
    type=float,
    default=None,
    help="BatchNormalization momentum of the base. Default: Keras' 0.99 with pretrained"
    " weights, 0.9 from scratch (moving statistics catch up sooner).",
)
@click.option(
    "--patience",
    type=int,
    default=4,
    show_default=True,
    help="Epochs without improvement before early stopping (with --lr-schedule plateau, the"
    " learning rate halves after half as many).",
)
@click.option(
    "--monitor",
    type=click.Choice(["val_auc", "val_loss", "val_accuracy"]),
    default="val_auc",
    show_default=True,
    help="Validation score that picks the best epoch (checkpoint, early stopping).",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES),
    default="plateau",
    show_default=True,
    help="plateau: halve the learning rate when --monitor stalls; cosine: anneal it to 0 by"
    " the last epoch or the end of --time-budget, whichever comes first (with a warm-up"
    " over the first epoch from scratch).",
)
@click.option(
    "--time-budget",
    "time_budget_s",
    type=float,
    default=None,
    help="Seconds of training: stop after the epoch that leaves too little time for another.",
)
@click.option(
    "--bad-images",
    type=click.Choice(BAD_IMAGE_POLICIES),
    default="fail",
    show_default=True,
    help="Unreadable images: fail naming them, or skip them (listed in run.json).",
)
@click.option(
    "--faces",
    type=click.Choice(FACE_MODES),
    default="off",
    show_default=True,
    help="Face framing: off (the whole image), align (find the main face and align it like a"
    " UTKFace crop; the whole image when none is found), require (no face: the image is"
    " unreadable, see --bad-images). Recorded in run.json: later stages frame alike.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Threads decoding images. Default: CPU count + 1 (at most 8).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    default=False,
    help="Replace a model already in --out.",
)
@click.option("--quiet", is_flag=True, default=False, help="No per-epoch progress lines.")
def train(**kwargs: object) -> None:
    """Train a classifier on labeled images and write RUN_DIR."""
    _quiet_tensorflow()
    from models.train import TrainConfig
    from models.train import train as run_train

    quiet = kwargs.pop("quiet")
    result = run_train(TrainConfig(**kwargs, verbose=0 if quiet else 2))  # type: ignore[arg-type]
    m = result.val_metrics
    click.echo(
        f"model: {result.model_path}\n"
        f"validation: accuracy {m['accuracy']:.4f}, ROC AUC {m['roc_auc']:.4f}"
        f" ({m['n']} images; output = P({result.run_info.positive_class}))"
    )


def _model_options(f):  # type: ignore[no-untyped-def]
    f = click.option(
        "--threshold",
        type=click.FloatRange(0, 1),
        default=0.5,
        show_default=True,
        help="P(positive) at or above which an image is labeled the positive class.",
    )(f)
    f = click.option(
        "--image-size",
        default=None,
        help="Input size N or HxW. Default: the model's input (or run.json).",
    )(f)
    f = click.option(
        "--positive",
        default=None,
        help="Class to report P() of. Default: the model's positive class.",
    )(f)
    f = click.option(
        "--class-names",
        default=None,
        help="Class names in output order, e.g. female,male, for a model without run.json.",
    )(f)
    f = click.option(
        "--preprocess",
        "preprocessing",
        type=click.Choice(PREPROCESSING),
        default=None,
        help=_PREPROCESS_HELP,
    )(f)
    f = click.option(
        "--faces",
        type=click.Choice(FACE_MODES),
        default=None,
        help="Face framing (off, align, require). Default: what run.json records (off without"
        " it); align frames a model trained on crops to photos.",
    )(f)
    f = click.option(
        "--batch-size", type=int, default=32, show_default=True, help="Images per batch."
    )(f)
    f = click.option(
        "--model",
        required=True,
        type=click.Path(path_type=str),
        help="Keras model (.keras or legacy .h5), e.g. RUN_DIR/model.keras.",
    )(f)
    return f


@cli.command()
@_model_options
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=str),
    help="Labeled images: a folder of <class>/ folders, a dataset folder (its test/ or val/"
    " part is used), or a path,label CSV.",
)
@click.option(
    "--split",
    default=None,
    help="Subfolder of --data (or value of a CSV's split column) to evaluate on.",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder for metrics.json, predictions.csv, misclassified.csv, confusion_matrix.png"
    " and roc.png. Default: evaluation/ beside the model.",
)
@click.option(
    "--copy-misclassified",
    is_flag=True,
    default=False,
    help="Also copy misclassified images into OUT/misclassified/<true>_as_<pred>/.",
)
@click.option(
    "--bad-images",
    type=click.Choice(BAD_IMAGE_POLICIES),
    default="fail",
    show_default=True,
    help="Unreadable images: fail naming them, or skip them (listed in metrics.json).",
)
@click.option("--json", "as_json", is_flag=True, default=False, help="Print metrics as JSON.")
def evaluate(
    model: str,
    data: str,
    out: str | None,
    split: str | None,
    copy_misclassified: bool,
    bad_images: str,
    as_json: bool,
    **opts: object,
) -> None:
    """Evaluate a model on labeled images: metrics, confusion matrix, ROC, misclassified."""
    _quiet_tensorflow()
    from pathlib import Path

    from models.evaluate import evaluate as run_evaluate
    from models.evaluate import format_metrics

    out_dir = out or str(Path(model).parent / "evaluation")
    result = run_evaluate(
        model,
        data,
        out=out_dir,
        split=split,
        bad_images=bad_images,
        copy_misclassified=copy_misclassified,
        **opts,  # type: ignore[arg-type]
    )
    if as_json:
        click.echo(result.files["metrics"].read_text().rstrip())
    else:
        click.echo(format_metrics(result.metrics))
        click.echo(f"misclassified: {len(result.misclassified)}; written to {out_dir}")


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=str))
@_model_options
@click.option(
    "--show",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="Also draw the images with their predictions into this PNG (with face framing: the"
    " face box on each photo and the aligned crop the model saw).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "csv", "json"]),
    default="text",
    show_default=True,
    help="Output: aligned text, CSV, or one JSON object per line.",
)
def predict(
    images: tuple[str, ...], model: str, show: str | None, fmt: str, **opts: object
) -> None:
    """Label and confidence for each IMAGE (files or folders of images)."""
    _quiet_tensorflow()
    from models.errors import DataError
    from models.predict import predict as run_predict

    rows, info = run_predict(model, list(images), show=show, **opts)  # type: ignore[arg-type]
    pcol = f"p_{info.positive_class}"
    if fmt == "json":
        for r in rows:
            d = r.as_dict()
            d[pcol] = d.pop("p_positive")
            click.echo(json.dumps(d))
    elif fmt == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "label", "confidence", pcol, "error_code", "error"])
        for r in rows:
            writer.writerow(
                [
                    r.path,
                    r.label or "",
                    _num(r.confidence),
                    _num(r.p_positive),
                    r.error_code or "",
                    r.error or "",
                ]
            )
    else:
        width = max(len(r.path) for r in rows)
        for r in rows:
            if r.label is not None:
                click.echo(
                    f"{r.path:<{width}}  {r.label:<8} {r.confidence:.4f}  ({pcol}={r.p_positive:.4f})"
                )
            else:
                click.echo(f"{r.path:<{width}}  error: {r.error_code}: {r.error}")
    if show:
        click.echo(f"drawn to {show}", err=True)
    failed = sum(r.label is None for r in rows)
    if failed == len(rows):
        raise DataError(f"none of the {len(rows)} image(s) could be read")
    if failed:
        click.echo(f"{failed} of {len(rows)} image(s) could not be read", err=True)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"
