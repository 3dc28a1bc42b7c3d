"""Images for the checks and for INT8 calibration: a folder, a CSV, or generated faces.

A folder is searched recursively; an image is labeled by the nearest folder above it named
like a class (``val/male/x.jpg`` -> ``male``). A CSV has a ``path`` column (relative to the
CSV's folder, or absolute) and optionally a ``label`` column of class names. Every image goes
through :func:`models.imageio.load_image`, the loader training and scoring use. Unreadable
images are skipped and counted; when more images are found than ``limit``, a fixed-seed
sample is taken.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import DataError
from models.framing import Framing
from models.imageio import ImageError, load_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
UNLABELED = -1


@dataclass
class CheckImages:
    """uint8 ``(n, h, w, 3)`` images, labels (1 positive, 0 negative, -1 unknown), provenance."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    paths: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labeled(self) -> np.ndarray:
        """Mask of images with a known label."""
        return self.labels != UNLABELED

    @property
    def n_per_class(self) -> tuple[int, int]:
        """(negatives, positives) among the labeled images."""
        return int((self.labels == 0).sum()), int((self.labels == 1).sum())

    def has_both_classes(self) -> bool:
        neg, pos = self.n_per_class
        return neg > 0 and pos > 0


def load_check_images(
    source: str | os.PathLike[str],
    size: tuple[int, int],
    class_names: Sequence[str],
    positive_class: str,
    *,
    limit: int = 256,
    seed: int = 0,
    framing: Framing | None = None,
) -> CheckImages:
    """Read up to ``limit`` images from a folder or CSV at ``size`` (h, w), framed as the model
    was trained (``framing``; default: the whole image)."""
    source = Path(source)
    if source.is_dir():
        entries = _folder_entries(source, class_names)
    elif source.is_file() and source.suffix.lower() == ".csv":
        entries = _csv_entries(source, class_names)
    elif source.exists():
        raise DataError(f"{source}: check and calibration data must be a folder of images or a CSV")
    else:
        raise DataError(f"no such folder or CSV: {source}")
    if not entries:
        raise DataError(
            f"{source}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if len(entries) > limit:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(entries), size=limit, replace=False))
        entries = [entries[i] for i in keep]
    images, labels, paths, skipped = [], [], [], {}
    for path, label in entries:
        try:
            images.append(load_image(path, size, framing))
        except ImageError as exc:
            skipped[path] = str(exc.code)
            continue
        paths.append(path)
        labels.append(UNLABELED if label is None else int(label == positive_class))
    if skipped:
        logger.warning("%s: skipped %d unreadable image(s)", source, len(skipped))
    if not images:
        raise DataError(f"{source}: none of {len(entries)} images could be read")
    return CheckImages(
        np.stack(images), np.asarray(labels, dtype=np.int64), str(source), paths, skipped
    )


def generated_images(size: tuple[int, int], n: int = 16, seed: int = 0) -> CheckImages:
    """Synthetic face-like images (no labels) for the parity check when no data is given."""
    from models.synthetic import synthetic_face

    rng = np.random.default_rng(seed)
    images = np.stack(
        [np.asarray(synthetic_face(i % 2, rng, size), dtype=np.uint8) for i in range(n)]
    )
    return CheckImages(images, np.full(n, UNLABELED, dtype=np.int64), "generated")


def _folder_entries(root: Path, class_names: Sequence[str]) -> list[tuple[str, str | None]]:
    lookup = {c.lower(): c for c in class_names}
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_parts = Path(dirpath).relative_to(root).parts
        label = next((lookup[p.lower()] for p in reversed(rel_parts) if p.lower() in lookup), None)
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                entries.append((os.path.join(dirpath, name), label))
    return entries


def _csv_entries(csv_path: Path, class_names: Sequence[str]) -> list[tuple[str, str | None]]:
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"cannot read {csv_path}: {exc}") from None
    if "path" not in frame.columns:
        raise DataError(f"{csv_path} has no 'path' column (columns: {', '.join(frame.columns)})")
    labels: list[str | None] = [None] * len(frame)
    if "label" in frame.columns:
        values = frame["label"].str.strip()
        unknown = sorted(set(values) - set(class_names) - {""})
        if unknown:
            raise DataError(
                f"{csv_path}: labels {unknown[:5]} are not class names {list(class_names)}:"
                " pass --class-names in the model's class order"
            )
        labels = [v or None for v in values]
    base = csv_path.parent
    return [
        (p if os.path.isabs(p) or "://" in p else str(base / p), label)
        for p, label in zip(frame["path"], labels, strict=True)
        if p.strip()
    ]
