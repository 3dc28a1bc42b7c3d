"""Predict the class of single images with a Keras classifier.

An unreadable image becomes a row with its stable error code rather than stopping the rest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.data import IMAGE_EXTENSIONS, Sample, decode_samples
from models.errors import UsageError
from models.framing import Framing
from models.inference import ModelInfo, load_for_inference, positive_scores, resolve_model_info
from models.internal.validation import check_positive_int, check_threshold
from models.probabilities import is_positive


@dataclass(frozen=True)
class Prediction:
    """One image's label and confidence (the probability of that label), or its error."""

    path: str
    label: str | None
    confidence: float | None
    p_positive: float | None
    error_code: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def expand_images(images: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Paths as given; a folder becomes the image files under it (sorted)."""
    out: list[str] = []
    for item in images:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise UsageError(f"no images in folder {p}")
            out.extend(found)
        else:
            out.append(str(item))
    if not out:
        raise UsageError("no images given: pass one or more IMAGE paths or folders")
    return out


def predict(
    model: str | os.PathLike[str] | Any,
    images: Sequence[str | os.PathLike[str]],
    *,
    preprocessing: str | None = None,
    class_names: str | tuple[str, str] | None = None,
    positive: str | None = None,
    image_size: int | str | tuple[int, int] | None = None,
    threshold: float = 0.5,
    batch_size: int = 32,
    show: str | os.PathLike[str] | None = None,
    faces: str | None = None,
) -> tuple[list[Prediction], ModelInfo]:
    """Label and confidence per image (input order); ``show`` draws them into a PNG (with the
    face box on the photo and the crop the model saw, when framing finds faces). ``faces``
    overrides the model's own framing."""
    check_positive_int(batch_size, "--batch-size")
    check_threshold(threshold)
    paths = expand_images(images)
    keras_model, model_path = load_for_inference(model)
    info = resolve_model_info(
        model_path,
        keras_model,
        preprocessing=preprocessing,
        class_names=class_names,
        positive=positive,
        image_size=image_size,
        faces=faces,
    )
    samples = [Sample(p, info.positive_class) for p in paths]
    decoded = decode_samples(
        samples,
        info.image_size,
        info.positive_class,
        bad_images="skip",
        require_some=False,
        what="the images given",
        framing=info.framing,
    )
    bad = {b.path: b for b in decoded.bad}
    scores: dict[str, float] = {}
    if len(decoded):
        p = positive_scores(keras_model, decoded, info, batch_size)
        scores = dict(zip(decoded.paths, p.tolist(), strict=True))
    pixels = dict(zip(decoded.paths, decoded.pixels, strict=True))
    negative, pos = info.target_names
    rows = []
    for path in paths:
        if path in scores:
            s = scores[path]
            label = pos if is_positive(s, threshold) else negative
            rows.append(Prediction(path, label, s if label == pos else 1.0 - s, s))
        else:
            b = bad[path]
            rows.append(Prediction(path, None, None, None, b.code, b.message))
    if show is not None:
        from models.plots import plot_predictions

        titles = [
            f"{r.label} {r.confidence:.2f}" if r.label else f"error: {r.error_code}" for r in rows
        ]
        if info.framing.aligned:
            from models.plots import plot_framed_predictions

            photos = [_framed_photo(r.path, info) for r in rows]
            plot_framed_predictions(photos, [pixels.get(r.path) for r in rows], titles, Path(show))
        else:
            plot_predictions([pixels.get(r.path) for r in rows], titles, Path(show))
    return rows, info


def _framed_photo(path: str, info: ModelInfo) -> tuple[Any, Any] | None:
    """The upright photo (at most 512 px a side) and its face box in those pixels, for
    ``--show``; None when the file cannot be read."""
    from models.imageio import ImageError, decode_framed, read_image_bytes

    try:
        data = read_image_bytes(path)
        found = decode_framed(data, [(info.image_size, info.framing.with_mode("align"))])
        width, height = found.full_size
        k = min(1.0, 512 / max(width, height))
        shown = (max(1, round(height * k)), max(1, round(width * k)))
        photo = decode_framed(data, [(shown, Framing())]).arrays[0]
    except ImageError:
        return None
    box = None if found.box is None else tuple(v * shown[1] / width for v in found.box)
    return photo, box
