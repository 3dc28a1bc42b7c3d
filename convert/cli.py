"""`genderscore convert`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from convert.options import PREPROCESS_CHOICES, ConvertOptions
from models.framing import FACE_MODES

_INT8_CHOICES = ("auto", "u8s8", "s8s8")


def _class_names(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(","))
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise click.BadParameter(
            f"give two distinct names in the model's class order, e.g. female,male; got {value!r}"
        )
    return names


def _image_size(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    parts = value.lower().replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise click.BadParameter(f"use HEIGHTxWIDTH or SIZE, e.g. 224x224; got {value!r}")
    return size


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the ONNX model (written only when every check passes).",
)
@click.option(
    "--preprocess",
    type=click.Choice(PREPROCESS_CHOICES),
    default="auto",
    show_default=True,
    help="Preprocessing the model was trained with; 'auto' reads the run.json genderscore"
    " training wrote beside the model and refuses when there is none.",
)
@click.option(
    "--class-names",
    callback=_class_names,
    help="The two classes in the model's output order (default: from run.json, else"
    " female,male as Keras' folder loaders order them).",
)
@click.option(
    "--positive",
    help="The class whose probability the model outputs as 'prob' (default: run.json, else"
    " the second class name).",
)
@click.option(
    "--name",
    help="Model name; the scoring column becomes p_<name> (default: the file name).",
)
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option(
    "--faces",
    type=click.Choice(FACE_MODES),
    default=None,
    help="Face framing the model was trained with (off, align, require), written into the"
    " ONNX metadata so scoring frames alike. Default: run.json's, else off.",
)
@click.option(
    "--image-size",
    callback=_image_size,
    help="HEIGHTxWIDTH, only for models whose input accepts any size (default: run.json).",
)
@click.option(
    "--check-data",
    type=click.Path(exists=True, path_type=Path),
    help="Folder (class subfolders label images) or CSV (path[,label]) of images for the"
    " parity check, the preprocessing check (labeled) and the int8 gate. Default: generated"
    " images, parity only.",
)
@click.option(
    "--check-limit",
    type=int,
    default=256,
    show_default=True,
    help="At most this many check images (a fixed-seed sample).",
)
@click.option("--int8", is_flag=True, help="Also quantize to INT8 (static QDQ, per-channel).")
@click.option(
    "--calibration",
    type=click.Path(exists=True, path_type=Path),
    help="Folder or CSV of representative images for INT8 calibration (needed with --int8).",
)
@click.option(
    "--calibration-limit",
    type=int,
    default=128,
    show_default=True,
    help="At most this many calibration images.",
)
@click.option(
    "--int8-format",
    type=click.Choice(_INT8_CHOICES),
    default="auto",
    show_default=True,
    help="u8s8 (uint8 activations, int8 weights), s8s8, or auto: measure both against fp32"
    " and keep the fastest, or fp32 when int8 does not pay.",
)
@click.option(
    "--max-auc-drop",
    type=float,
    default=0.005,
    show_default=True,
    help="INT8 gate: largest AUC drop against fp32 on labeled check images.",
)
@click.option(
    "--min-agreement",
    type=float,
    default=0.99,
    show_default=True,
    help="INT8 gate: smallest share of check images labeled the same as fp32 at 0.5.",
)
@click.option(
    "--parity-tolerance",
    type=float,
    default=1e-4,
    show_default=True,
    help="Largest allowed |logit difference| between ONNX and Keras, scaled by max(1, |logit|).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write even when the INT8 gate or the preprocessing check refuses, or an option"
    " contradicts run.json (never when parity fails).",
)
@click.option(
    "--unsafe-load",
    is_flag=True,
    help="Allow layers that run code stored in the model file (Lambda). Only for files you trust.",
)
def cli(model: Path, out: Path, **kwargs: object) -> None:
    """Convert a Keras model (.keras, legacy .h5, SavedModel or a training run folder) to
    ONNX: uint8 RGB image in, preprocessing inside, P(positive) out, parity-checked."""
    from convert.converter import convert_model

    logging.captureWarnings(True)
    result = convert_model(model, out, ConvertOptions(**kwargs))
    meta = result.metadata
    click.echo(f"wrote {result.path}")
    click.echo(
        f"  name {meta.name} (column {meta.column}), backbone {meta.backbone},"
        f" input {meta.input_size[0]}x{meta.input_size[1]}, preprocessing {meta.preprocessing},"
        f" P({meta.positive_class}) of {','.join(meta.class_names)}, faces {meta.framing.mode}"
    )
    click.echo(
        f"  parity: max |logit difference| {result.parity.max_abs_logit_diff:.2g} on"
        f" {result.parity.n_images} {result.parity.source} images"
    )
    if result.preprocessing_check is not None:
        aucs = ", ".join(f"{k} {v:.3f}" for k, v in result.preprocessing_check.aucs.items())
        click.echo(f"  preprocessing check (AUC): {aucs}")
    if result.int8 is not None:
        speeds = result.int8.get("speed_img_per_s")
        if speeds:
            where = f"batch {result.int8['speed_batch']}, {result.int8['speed_threads']} thread"
            click.echo(
                f"  speed at {where}: " + ", ".join(f"{k} {v:g} img/s" for k, v in speeds.items())
            )
        click.echo(f"  kept: {result.int8['chosen']}")
