"""What ``evaluate`` and ``predict`` share: how to feed a Keras model and read its output.

A model trained here records its preprocessing, classes, positive class and input size in
``run.json``; any other Keras model needs them given explicitly (never guessed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.data import DecodedImages, check_positive
from models.errors import DataError, UsageError
from models.framing import Framing, parse_face_mode
from models.internal.validation import parse_class_names, parse_image_size
from models.preprocessing import PREPROCESSING, get_preprocessing
from models.probabilities import flip_where
from models.runinfo import read_run_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """How to feed a model and what its output means."""

    class_names: tuple[str, str]
    positive_class: str
    #: The class the model's sigmoid output is the probability of (for a 2-way softmax,
    #: column ``i`` is the probability of ``class_names[i]``).
    output_class: str
    preprocessing: str
    image_size: tuple[int, int]
    source: str
    #: How images are cut before the model sees them (run.json's, or ``--faces``).
    framing: Framing = Framing()

    @property
    def negative_class(self) -> str:
        return next(c for c in self.class_names if c != self.positive_class)

    @property
    def target_names(self) -> tuple[str, str]:
        """(negative, positive): the order of 0/1 targets and of metrics' class names."""
        return self.negative_class, self.positive_class


def resolve_model_info(
    model_path: str | os.PathLike[str] | None,
    model: Any,
    *,
    preprocessing: str | None = None,
    class_names: str | Sequence[str] | None = None,
    positive: str | None = None,
    image_size: int | str | tuple[int, int] | None = None,
    data_class_names: Sequence[str] | None = None,
    faces: str | None = None,
) -> ModelInfo:
    """Combine ``run.json`` (when it describes ``model_path``) with explicit options, which
    win. Without ``run.json`` the preprocessing must be given; class names default to the
    data's two sorted classes (the Keras directory-loader convention: output = P(second)).
    ``faces`` overrides the framing run.json records (``off`` without run.json)."""
    from models.build import model_input_size

    run = read_run_info(model_path) if model_path is not None else None
    names = parse_class_names(class_names)
    framing = run.framing if run is not None else Framing()
    if faces is not None:
        framing = framing.with_mode(parse_face_mode(faces))
    if preprocessing is not None and preprocessing not in PREPROCESSING:
        get_preprocessing(preprocessing)  # raises with the list of choices
    if run is not None:
        if names is not None and set(names) != set(run.class_names):
            raise UsageError(
                f"--class-names {','.join(names)} differ from the classes the model was"
                f" trained on ({','.join(run.class_names)}, in {run.path})"
            )
        names = run.class_names
        output_class = run.positive_class
        prep = preprocessing or run.preprocessing
        if preprocessing and preprocessing != run.preprocessing:
            log.warning(
                "--preprocess %s overrides %s recorded in %s",
                preprocessing,
                run.preprocessing,
                run.path,
            )
        default_positive = run.positive_class
        source = str(run.path)
    else:
        if preprocessing is None:
            where = f"{model_path}" if model_path is not None else "the model"
            raise UsageError(
                f"{where} records no preprocessing (no run.json from genderscore training"
                f" beside it): pass --preprocess, one of {', '.join(PREPROCESSING)}"
            )
        prep = preprocessing
        if names is None:
            if data_class_names is None or len(set(data_class_names)) != 2:
                raise UsageError(
                    f"{model_path} records no class names: pass --class-names in output order"
                    " (e.g. female,male: the sigmoid is P(second name))"
                )
            names = tuple(sorted(set(data_class_names)))  # type: ignore[assignment]
            log.info("class names from the data: %s (output = P(%s))", ",".join(names), names[1])
        output_class = names[1]
        default_positive = names[1]
        source = "options"
    pos = check_positive(positive or default_positive, names, where="the model's classes")
    size = parse_image_size(image_size) or model_input_size(model)
    if size is None and run is not None:
        size = run.image_size
    if size is None:
        raise UsageError("the model's input size is dynamic: pass --image-size")
    fixed = model_input_size(model)
    if fixed is not None and fixed != size:
        raise UsageError(f"--image-size {size[0]}x{size[1]} differs from the model's input {fixed}")
    return ModelInfo(
        class_names=(names[0], names[1]),
        positive_class=pos,
        output_class=output_class,
        preprocessing=prep,
        image_size=size,
        source=source,
        framing=framing,
    )


def positive_scores(model: Any, images: DecodedImages, info: ModelInfo, batch_size: int) -> Any:
    """P(positive class) per decoded image, float64, through the training input pipeline."""
    from models.data import make_dataset

    ds = make_dataset(images, batch_size=batch_size, preprocessing=info.preprocessing)
    out = np.asarray(model.predict(ds, verbose=0), dtype=np.float64)
    return output_to_positive(out, info)


def output_to_positive(out: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Model outputs -> P(positive): a sigmoid column or a 2-way softmax."""
    out = np.asarray(out, dtype=np.float64)
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        p = out.reshape(-1)
        return flip_where(p, info.output_class != info.positive_class)
    if out.ndim == 2 and out.shape[1] == 2:
        return out[:, info.class_names.index(info.positive_class)]
    raise DataError(
        f"model output has shape {out.shape}: expected one sigmoid or a 2-way softmax per image"
    )


def load_for_inference(model: str | os.PathLike[str] | Any) -> tuple[Any, Path | None]:
    """A Keras model and its path (None when a model object was given)."""
    if isinstance(model, str | os.PathLike):
        from models.build import load_model

        return load_model(model), Path(model)
    return model, None
