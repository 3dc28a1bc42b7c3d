"""Conversion options: checked in one place, then resolved against what training recorded.

:func:`check_options` validates what the user gave (one :class:`UsageError` per problem,
saying how to fix it). :func:`resolve_settings` combines the options with ``run.json`` and the
model itself into the :class:`Settings` the conversion uses: explicit values that contradict
``run.json`` are refused (unless ``force``), and ``--preprocess auto`` without a ``run.json``
is refused with the list of choices. Nothing is guessed silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.descriptor import ModelDescriptor, check_model_name
from models.errors import UsageError
from models.framing import Framing, parse_face_mode
from models.preprocessing import PREPROCESSING
from models.runinfo import RunInfo

PREPROCESS_CHOICES = ("auto", *PREPROCESSING)
#: Class order Keras' directory loaders give ``female/`` and ``male/`` folders.
DEFAULT_CLASS_NAMES = ("female", "male")


@dataclass(frozen=True)
class ConvertOptions:
    """What the user asked for (``genderscore convert`` options, one to one)."""

    preprocess: str = "auto"
    class_names: tuple[str, str] | None = None
    positive: str | None = None
    name: str | None = None
    opset: int = 17
    image_size: tuple[int, int] | None = None
    check_data: Path | None = None
    check_limit: int = 256
    int8: bool = False
    calibration: Path | None = None
    calibration_limit: int = 128
    int8_format: str = "auto"
    max_auc_drop: float = 0.005
    min_agreement: float = 0.99
    parity_tolerance: float = 1e-4
    force: bool = False
    unsafe_load: bool = False
    #: Face framing the model was trained with; default: run.json's, else ``off``.
    faces: str | None = None


def check_options(opts: ConvertOptions) -> ConvertOptions:
    """Validate ``opts``; returns them unchanged or raises :class:`UsageError`."""
    from convert.export import MIN_OPSET
    from convert.quantize import INT8_CHOICES

    if opts.faces is not None:
        parse_face_mode(opts.faces)
    if opts.preprocess not in PREPROCESS_CHOICES:
        raise UsageError(
            f"unknown --preprocess {opts.preprocess!r}: choose one of {', '.join(PREPROCESS_CHOICES)}"
        )
    if opts.class_names is not None:
        names = tuple(opts.class_names)
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise UsageError(
                f"--class-names needs two distinct names in the model's class order, e.g."
                f" female,male; got {','.join(names)!r}"
            )
    if opts.positive is not None and opts.class_names is not None:
        if opts.positive not in opts.class_names:
            raise UsageError(
                f"--positive {opts.positive!r} is not one of --class-names {','.join(opts.class_names)}"
            )
    if opts.name is not None:
        check_model_name(opts.name, "--name", UsageError)
    max_opset = _max_opset()
    if not MIN_OPSET <= opts.opset <= max_opset:
        raise UsageError(f"--opset {opts.opset}: choose between {MIN_OPSET} and {max_opset}")
    if opts.image_size is not None and (len(opts.image_size) != 2 or min(opts.image_size) < 1):
        raise UsageError(f"--image-size must be HEIGHTxWIDTH, got {opts.image_size!r}")
    if opts.check_limit < 1 or opts.calibration_limit < 1:
        raise UsageError("--check-limit and --calibration-limit must be at least 1")
    if opts.int8 and opts.calibration is None:
        raise UsageError(
            "--int8 needs --calibration DATA: a folder or CSV of representative images"
        )
    if opts.calibration is not None and not opts.int8:
        raise UsageError("--calibration is only used with --int8: add --int8 or drop --calibration")
    if opts.int8_format not in INT8_CHOICES:
        raise UsageError(
            f"unknown --int8-format {opts.int8_format!r}: choose one of {', '.join(INT8_CHOICES)}"
        )
    if not 0.0 < opts.parity_tolerance <= 0.1:
        raise UsageError(
            f"--parity-tolerance {opts.parity_tolerance:g}: choose a value in (0, 0.1]"
        )
    if not 0.0 <= opts.max_auc_drop <= 1.0 or not 0.0 <= opts.min_agreement <= 1.0:
        raise UsageError("--max-auc-drop and --min-agreement must be between 0 and 1")
    for label, path in (("--check-data", opts.check_data), ("--calibration", opts.calibration)):
        if path is not None and not Path(path).exists():
            raise UsageError(f"{label} {path}: no such folder or CSV")
    return opts


def _max_opset() -> int:
    try:
        from tf2onnx import constants

        return int(max(constants.OPSET_TO_IR_VERSION))
    except ImportError:  # checking options must not need the train extra
        return 18


@dataclass(frozen=True, kw_only=True)
class Settings(ModelDescriptor):
    """What the conversion uses (the model's descriptor, preprocessing and framing), and where
    each value came from."""

    preprocessing: str
    sources: dict[str, str]
    framing: Framing = Framing()


def resolve_settings(
    opts: ConvertOptions,
    run_info: RunInfo | None,
    model_path: Path,
    model_input_size: tuple[int, int] | None,
) -> Settings:
    """Combine options, ``run.json`` and the model's input size. Pure (no I/O)."""
    picker = _Picker(opts, run_info)
    preprocessing = _preprocessing(picker, model_path)
    class_names = picker.pick(
        "class_names",
        tuple(opts.class_names) if opts.class_names else None,
        tuple(run_info.class_names) if run_info else None,
        DEFAULT_CLASS_NAMES,
        "--class-names",
    )
    recorded_positive = run_info.positive_class if run_info else None
    if recorded_positive is not None and recorded_positive not in class_names:
        recorded_positive = None
    positive = picker.pick(
        "positive_class", opts.positive, recorded_positive, class_names[1], "--positive"
    )
    if positive not in class_names:
        raise UsageError(
            f"--positive {positive!r} is not one of the class names {list(class_names)}"
        )
    input_size = _input_size(picker, model_path, model_input_size)
    picker.sources["name"] = "option" if opts.name else "file name"
    return Settings(
        name=opts.name or _default_name(model_path),
        input_size=tuple(input_size),
        class_names=class_names,
        positive_class=positive,
        preprocessing=preprocessing,
        sources=picker.sources,
        framing=_framing(picker),
    )


class _Picker:
    """An option, else what ``run.json`` recorded, else a default; remembers which won
    (``sources``), and refuses an option that contradicts the record unless ``--force``."""

    def __init__(self, opts: ConvertOptions, run_info: RunInfo | None) -> None:
        self.opts = opts
        self.run_info = run_info
        self.sources: dict[str, str] = {}

    def pick(self, key: str, explicit: Any, recorded: Any, default: Any = None, what: str = ""):
        if explicit is not None:
            if recorded is not None and explicit != recorded and not self.opts.force:
                self.contradiction(f"{what or key} {_show(explicit)}", _show(recorded))
            self.sources[key] = "option"
            return explicit
        if recorded is not None:
            self.sources[key] = "run.json"
            return recorded
        self.sources[key] = "default"
        return default

    def contradiction(self, option: str, recorded: str) -> None:
        where = self.run_info.path if self.run_info else "run.json"
        raise UsageError(
            f"{option} contradicts {recorded} recorded in {where}: drop the option, or pass"
            " --force if the record is wrong"
        )


def _preprocessing(picker: _Picker, model_path: Path) -> str:
    opts, run_info = picker.opts, picker.run_info
    if opts.preprocess != "auto":
        recorded = run_info.preprocessing if run_info else None
        return picker.pick("preprocessing", opts.preprocess, recorded, what="--preprocess")
    if run_info is None:
        raise UsageError(
            f"--preprocess auto: {model_path} has no run.json from genderscore training,"
            " so its preprocessing is unknown; say which one it was trained with:"
            f" --preprocess {'|'.join(PREPROCESSING)}"
        )
    picker.sources["preprocessing"] = "run.json"
    return run_info.preprocessing


def _input_size(
    picker: _Picker, model_path: Path, model_input_size: tuple[int, int] | None
) -> tuple[int, int]:
    opts, run_info = picker.opts, picker.run_info
    if model_input_size is not None:
        if opts.image_size is not None and tuple(opts.image_size) != model_input_size:
            raise UsageError(
                f"--image-size {_size(opts.image_size)} differs from the model's fixed input"
                f" {_size(model_input_size)}: drop --image-size"
            )
        picker.sources["input_size"] = "model"
        return model_input_size
    recorded_size = tuple(run_info.image_size) if run_info else None
    input_size = picker.pick("input_size", opts.image_size, recorded_size, what="--image-size")
    if input_size is None:
        raise UsageError(
            f"{model_path} accepts any image size and no run.json records one: pass"
            " --image-size HEIGHTxWIDTH (the size it was trained at)"
        )
    return input_size


def _framing(picker: _Picker) -> Framing:
    opts, run_info = picker.opts, picker.run_info
    recorded = run_info.framing if run_info else None
    framing = recorded or Framing()
    if opts.faces is None:
        picker.sources["framing"] = "run.json" if recorded else "default"
        return framing
    framing = framing.with_mode(opts.faces)
    if recorded is not None and framing != recorded and not opts.force:
        picker.contradiction(f"--faces {opts.faces}", f"framing {recorded.mode}")
    picker.sources["framing"] = "option"
    return framing


def _default_name(model_path: Path) -> str:
    stem = model_path.name if model_path.is_dir() else model_path.stem
    if stem.lower() in ("model", "saved_model", "savedmodel", "") and model_path.parent.name:
        # A training run's model.keras: the run folder says which model it is.
        stem = model_path.parent.name
    name = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_").lower()
    if not name or not name[0].isalpha():
        name = f"m_{name}" if name else "model"
    return name[:64]


def _show(value) -> str:
    return (
        ",".join(value)
        if isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        else repr(value)
    )


def _size(size) -> str:
    return f"{size[0]}x{size[1]}"
