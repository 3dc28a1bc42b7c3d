"""Framing: how a model's input is cut from a photo, defined once for every stage.

``off`` resizes the whole image (aspect not kept, as Keras' directory loaders do). ``align``
and ``require`` find the main face (:mod:`models.faces`) and map its eyes, nose and mouth onto
a template with a similarity transform (rotation, scale, shift), so a photo's face lands where
the training crops had theirs; ``align`` falls back to the whole image when no face is found,
``require`` makes that image an error (``no_face``). A face at the border is padded with black,
as UTKFace's own aligned crops are, never shifted.

The template travels with the model (``run.json``, then the ONNX metadata), so a model is
scored framed as it was trained.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from PIL import Image

from models.errors import DataError, UsageError
from models.faces import Face, FaceDetector, default_detector, main_face

#: Eyes (the subject's right, then left), nose and mouth as fractions of a square crop's side:
#: where BlazeFace finds them, on average, in UTKFace's aligned 200x200 training crops
#: (1,977 of 2,000 train crops with a face; ``python benchmarks/bench_faces.py template``).
UTKFACE_TEMPLATE: tuple[tuple[float, float], ...] = (
    (0.2841, 0.2977),
    (0.6921, 0.2849),
    (0.4869, 0.5150),
    (0.4941, 0.7216),
)
#: The landmarks (indices into :data:`models.faces.LANDMARKS`) a template places; the ears
#: are left out: in a turned head one is hidden and its guess wanders.
TEMPLATE_LANDMARKS = (0, 1, 2, 3)


class FaceMode(StrEnum):
    """What to do before a model sees an image."""

    OFF = "off"  # the whole image
    ALIGN = "align"  # the aligned main face; the whole image when none is found
    REQUIRE = "require"  # the aligned main face; no face is an error row (no_face)


FACE_MODES: tuple[str, ...] = tuple(m.value for m in FaceMode)


def parse_face_mode(value: str | FaceMode) -> FaceMode:
    """``value`` as a :class:`FaceMode`; a one-line :class:`UsageError` listing the choices."""
    try:
        return FaceMode(value)
    except ValueError:
        raise UsageError(
            f"unknown face framing {value!r}: choose one of {', '.join(FACE_MODES)}"
        ) from None


@dataclass(frozen=True)
class Framing:
    """A model's framing: the mode and, for aligned modes, the template."""

    mode: FaceMode = FaceMode.OFF
    template: tuple[tuple[float, float], ...] = field(default=UTKFACE_TEMPLATE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", parse_face_mode(self.mode))
        try:
            pts = np.asarray(self.template, dtype=np.float64)
        except (TypeError, ValueError):
            pts = np.empty(0)
        # Coincident or swapped eyes would make the alignment singular or mirror the face.
        if (
            pts.shape != (len(TEMPLATE_LANDMARKS), 2)
            or not np.all((pts >= 0.0) & (pts <= 1.0))
            or not pts[0, 0] < pts[1, 0]
        ):
            raise DataError(
                f"a face template is {len(TEMPLATE_LANDMARKS)} (x, y) pairs (eyes, nose, "
                f"mouth) as fractions of the crop in [0, 1], the subject's right eye left of "
                f"the left eye, got {self.template!r}"
            )
        object.__setattr__(self, "template", tuple((float(x), float(y)) for x, y in pts))

    @property
    def aligned(self) -> bool:
        return self.mode is not FaceMode.OFF

    @property
    def pixels_key(self) -> str:
        """Equal for framings that cut the same pixels from a photo that has a face."""
        if not self.aligned:
            return "full"
        digest = hashlib.sha256(json.dumps(self.template).encode()).hexdigest()[:8]
        return f"face{digest}"

    def with_mode(self, mode: str | FaceMode) -> Framing:
        """The same template under another mode (``--faces`` overriding a model's own)."""
        return Framing(parse_face_mode(mode), self.template)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, as ``run.json`` and the ONNX metadata keep it."""
        return {"mode": self.mode.value, "template": [list(p) for p in self.template]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str = "framing") -> Framing:
        """Parse :meth:`to_dict`'s output; ``None`` (a model from before framing) is ``off``."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping) or "mode" not in data:
            raise DataError(f"{source}: framing must be a mapping with a 'mode', got {data!r}")
        try:
            template = tuple(tuple(p) for p in data.get("template", UTKFACE_TEMPLATE))
            return cls(FaceMode(data["mode"]), template)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise DataError(f"{source}: bad framing {data!r}: {exc}") from None


@dataclass
class FramedImage:
    """One decoded image cut for each requested (size, framing), and the face it was cut at."""

    arrays: list[np.ndarray]
    #: The upright image's full-resolution (width, height).
    full_size: tuple[int, int] = (0, 0)
    #: Faces found; ``None`` when no framing needed a detector.
    faces: int | None = None
    #: The main face in the upright image's full-resolution pixels: x, y, width, height.
    box: tuple[float, float, float, float] | None = None
    score: float | None = None


def resize_whole(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The whole image at ``(h, w)`` (bilinear, aspect not kept): framing ``off``."""
    h, w = size
    resized = image if image.size == (w, h) else image.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares rotation + uniform scale + shift taking ``src`` points to ``dst``
    (Umeyama, without reflection), as a 2x3 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sing, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ fix @ vt
    var = (s**2).sum() / len(src)
    scale = float((sing * np.diag(fix)).sum() / var) if var > 0 else 1.0
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def align_face(
    image: Image.Image,
    landmarks: np.ndarray,
    template: Sequence[tuple[float, float]],
    size: tuple[int, int],
) -> np.ndarray:
    """Cut ``size`` (h, w) from ``image`` so the face's landmarks land on ``template``."""
    h, w = size
    src = np.asarray(landmarks, dtype=np.float64)[list(TEMPLATE_LANDMARKS)]
    dst = np.asarray(template, dtype=np.float64) * [w, h]
    m = similarity_transform(src, dst)
    scale = float(np.hypot(*m[:, 0]))
    # Shrinking by more than 2x in one bilinear warp aliases: first halve the photo in whole
    # steps (a box filter), then warp from the smaller copy.
    factor = max(1, int(1.0 / (2.0 * scale))) if scale > 0 else 1
    if factor > 1:
        image = image.reduce(factor)
        m = m.copy()
        m[:, :2] *= factor
    inverse = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    warped = image.transform(
        (w, h),
        Image.Transform.AFFINE,
        tuple(inverse.ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    return np.asarray(warped, dtype=np.uint8)


def frame_image(
    image: Image.Image,
    requests: Sequence[tuple[tuple[int, int], Framing]],
    *,
    full_size: tuple[int, int] | None = None,
    detector: FaceDetector | None = None,
) -> FramedImage:
    """Cut an RGB image for each ``(size, framing)``; the face is found once for all of them.

    ``full_size``: the upright image's (width, height) before any JPEG draft reduction, so the
    face box is reported in its pixels. Where no face is found every framing gets the whole
    image; :func:`models.imageio.decode_framed` turns that into ``no_face`` for ``require``.
    """
    out = FramedImage(arrays=[], full_size=full_size or image.size)
    face: Face | None = None
    if any(f.aligned for _, f in requests):
        faces = (detector or default_detector()).detect(image)
        face = main_face(faces)
        out.faces = len(faces)
        if face is not None:
            k = out.full_size[0] / image.size[0]
            out.box = tuple(float(v * k) for v in face.box)  # type: ignore[assignment]
            out.score = float(face.score)
    for size, framing in requests:
        if framing.aligned and face is not None:
            out.arrays.append(align_face(image, face.landmarks, framing.template, size))
        else:
            out.arrays.append(resize_whole(image, size))
    return out
