"""Labeled data for training and evaluation: find it, check it, decode it, feed it to Keras.

Layouts: ``DIR/train/<class>/`` with ``DIR/val/<class>/`` (or without, plus a validation
split), ``DIR/<class>/`` plus a validation split, or a CSV with ``path,label`` (paths relative
to the CSV; an optional ``split`` column with ``train``/``val``). Class names are sorted, the
way Keras' directory loaders sort them; the target is 1 for the positive class.

Pixels come from :func:`models.imageio.load_image`, the loader scoring uses, so training sees
the same pixels scoring will. Decoding happens once, on a thread pool; TensorFlow is imported
only by :func:`make_dataset`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import DataError, UsageError
from models.framing import Framing
from models.imageio import ImageError, Size, as_hw, load_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
TRAIN_DIRS = ("train",)
VAL_DIRS = ("val", "validation", "valid")
TEST_DIRS = ("test",)
BAD_IMAGE_POLICIES = ("fail", "skip")


@dataclass(frozen=True)
class Sample:
    """One labeled image file."""

    path: str
    label: str


@dataclass(frozen=True)
class LabeledData:
    """Labeled files split into train and validation, with the class names and the positive
    class (target 1)."""

    class_names: tuple[str, str]
    positive_class: str
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    source: str
    layout: str

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layout": self.layout,
            "class_names": list(self.class_names),
            "positive_class": self.positive_class,
            "train_counts": dict(sorted(Counter(s.label for s in self.train).items())),
            "val_counts": dict(sorted(Counter(s.label for s in self.val).items())),
        }


@dataclass(frozen=True)
class BadImage:
    path: str
    code: str
    message: str


@dataclass
class DecodedImages:
    """Decoded pixels of a list of samples (bad files left out and listed)."""

    pixels: np.ndarray  # (n, h, w, 3) uint8
    targets: np.ndarray  # (n,) int64, 1 = positive class
    paths: list[str]
    labels: list[str]
    bad: list[BadImage] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


# --------------------------------------------------------------------------- discovery


def discover_data(
    data: str | os.PathLike[str],
    *,
    val_split: float = 0.2,
    positive: str | None = None,
    seed: int = 0,
) -> LabeledData:
    """Find labeled images for training: a folder or a CSV (see the module docstring).

    ``val_split`` is used when the data has no validation part. ``positive`` defaults to the
    second sorted class name (``male`` for female/male).
    """
    root = _existing(data)
    if root.is_file():
        samples, splits = read_csv_samples(root)
        if splits is not None:
            train = [s for s, sp in zip(samples, splits, strict=True) if sp == "train"]
            val = [s for s, sp in zip(samples, splits, strict=True) if sp in VAL_DIRS]
            _need(train, f"{root} has a split column but no 'train' rows")
            layout = "csv+split"
            if not val:
                train, val = split_samples(train, val_split, seed)
                layout = "csv"
        else:
            train, val = split_samples(samples, val_split, seed)
            layout = "csv"
    else:
        train_dir = _child(root, TRAIN_DIRS)
        if train_dir is not None:
            train = scan_class_folders(train_dir)
            val_dir = _child(root, VAL_DIRS)
            if val_dir is not None:
                val = scan_class_folders(val_dir)
                layout = "train/val folders"
            else:
                train, val = split_samples(train, val_split, seed)
                layout = "train folder + split"
        else:
            train, val = split_samples(scan_class_folders(root), val_split, seed)
            layout = "class folders + split"
    class_names = class_names_of(train, where=str(root))
    extra = sorted({s.label for s in val} - set(class_names))
    if extra:
        raise DataError(
            f"validation data in {root} has class(es) {extra} that training data does not"
            f" ({', '.join(class_names)})"
        )
    return LabeledData(
        class_names=class_names,
        positive_class=check_positive(positive, class_names, where=str(root)),
        train=tuple(train),
        val=tuple(val),
        source=str(root),
        layout=layout,
    )


def discover_eval_data(
    data: str | os.PathLike[str], *, split: str | None = None
) -> tuple[list[Sample], str]:
    """Labeled images to evaluate on: a CSV (all rows, or those whose ``split`` is
    ``split``), a folder of class folders, or a dataset folder, where ``split`` (default:
    ``test``, else ``val``) names the subfolder. Returns the samples and a description."""
    root = _existing(data)
    if root.is_file():
        samples, splits = read_csv_samples(root)
        if split is not None:
            if splits is None:
                raise UsageError(f"--split {split!r} given but {root} has no 'split' column")
            samples = [s for s, sp in zip(samples, splits, strict=True) if sp == split]
            _need(samples, f"{root} has no rows with split {split!r}")
        return samples, str(root)
    if split is not None:
        sub = root / split
        if not sub.is_dir():
            raise DataError(f"no {split!r} folder in {root}")
        return scan_class_folders(sub), str(sub)
    sub = _child(root, TEST_DIRS) or _child(root, VAL_DIRS)
    if sub is not None:
        return scan_class_folders(sub), str(sub)
    return scan_class_folders(root), str(root)


def scan_class_folders(root: Path) -> list[Sample]:
    """``root/<class>/**/<image>``: one sample per image file, classes from folder names."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"no class folders in {root}: expected one folder per class"
            " (e.g. female/ and male/) holding images, train/ and val/ folders, or a CSV"
        )
    samples = []
    for class_dir in class_dirs:
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                    samples.append(Sample(os.path.join(dirpath, name), class_dir.name))
    if not samples:
        raise DataError(
            f"no images in {root}: its class folders"
            f" ({', '.join(d.name for d in class_dirs)}) hold no"
            f" {'/'.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))} files"
        )
    empty = [d.name for d in class_dirs if not any(s.label == d.name for s in samples)]
    if empty:
        raise DataError(f"class folder(s) {empty} in {root} hold no images")
    return samples


def read_csv_samples(csv_path: Path) -> tuple[list[Sample], list[str] | None]:
    """Rows of a ``path,label[,split]`` CSV; relative paths are resolved against its folder."""
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read CSV {csv_path}: {exc}") from None
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"CSV {csv_path} needs columns path,label; missing {', '.join(missing)}"
            f" (found: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    frame = frame.map(str.strip)
    _need(len(frame), f"no images in {csv_path}: it has no rows")
    blank = frame.index[(frame["path"] == "") | (frame["label"] == "")]
    if len(blank):
        rows = ", ".join(str(i + 2) for i in blank[:5])
        raise DataError(f"CSV {csv_path}: empty path or label on line(s) {rows}")
    base = csv_path.parent
    samples = [
        Sample(p if ("://" in p or os.path.isabs(p)) else str(base / p), label)
        for p, label in zip(frame["path"], frame["label"], strict=True)
    ]
    splits = list(frame["split"].str.lower()) if "split" in frame.columns else None
    return samples, splits


def class_names_of(samples: Sequence[Sample], *, where: str) -> tuple[str, str]:
    """The two class names, sorted; :class:`DataError` unless there are exactly two."""
    names = sorted({s.label for s in samples})
    if len(names) == 1:
        raise DataError(
            f"only one class ({names[0]!r}) in {where}: a binary classifier needs images of"
            " two classes (e.g. female/ and male/)"
        )
    if len(names) != 2:
        raise DataError(
            f"{len(names)} classes in {where} ({', '.join(names[:6])}): genderscore trains"
            " binary classifiers, give exactly two"
        )
    return names[0], names[1]


def check_positive(
    positive: str | None, class_names: Sequence[str], *, where: str = "the data"
) -> str:
    """``positive`` if it is a class name; the second sorted class when None."""
    if positive is None:
        return class_names[1]
    if positive not in class_names:
        raise DataError(
            f"--positive {positive!r} is not a class in {where}:"
            f" choose one of {', '.join(class_names)}"
        )
    return positive


def split_samples(
    samples: Sequence[Sample], val_split: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Stratified, seeded train/validation split."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_split < 1.0:
        raise UsageError(
            f"--val-split must be between 0 and 1 (exclusive), got {val_split}: the data has"
            " no validation part, so a share of it must be held out"
        )
    labels = [s.label for s in samples]
    counts = Counter(labels)
    if len(counts) < 2:
        class_names_of(samples, where="the data")  # raises the one-class message
    small = {k: v for k, v in counts.items() if v < 2}
    if small:
        raise DataError(
            f"too few images to hold out a validation split: {small} (need 2+ per class)"
        )
    n_val = max(int(round(len(samples) * val_split)), len(counts))
    if len(samples) - n_val < len(counts):
        raise DataError(f"--val-split {val_split} leaves no training images for some class")
    train, val = train_test_split(
        list(samples), test_size=n_val, stratify=labels, random_state=seed, shuffle=True
    )
    return sorted(train, key=_key), sorted(val, key=_key)


def _key(s: Sample) -> tuple[str, str]:
    return s.label, s.path


def _existing(data: str | os.PathLike[str]) -> Path:
    root = Path(data)
    if not root.exists():
        raise DataError(f"data not found: {root} (give a folder of class folders or a CSV)")
    if root.is_file() and root.suffix.lower() not in (".csv", ".txt"):
        raise DataError(f"{root} is a file but not a CSV: give a folder or a path,label CSV")
    return root


def _child(root: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _need(value: Any, message: str) -> None:
    if not value:
        raise DataError(message)


# --------------------------------------------------------------------------- decoding


def decode_samples(
    samples: Sequence[Sample],
    size: Size,
    positive_class: str,
    *,
    bad_images: str = "fail",
    workers: int | None = None,
    what: str = "data",
    require_some: bool = True,
    framing: Framing | None = None,
) -> DecodedImages:
    """Decode every sample through :func:`models.imageio.load_image` on a thread pool.

    ``bad_images="fail"`` raises :class:`DataError` naming the unreadable files;
    ``"skip"`` leaves them out, lists them in ``.bad`` and logs a warning. With
    ``require_some`` a result without any readable image is a :class:`DataError`.
    ``framing`` (default: the whole image) cuts each image as the model sees it; under
    ``require`` an image without a face is unreadable (``no_face``).
    """
    if bad_images not in BAD_IMAGE_POLICIES:
        raise UsageError(
            f"unknown bad-image policy {bad_images!r}: choose {' or '.join(BAD_IMAGE_POLICIES)}"
        )
    h, w = as_hw(size)
    workers = workers or min(8, (os.cpu_count() or 1) + 1)

    def one(path: str) -> np.ndarray | BadImage:
        try:
            return load_image(path, (h, w), framing)
        except ImageError as exc:
            return BadImage(path, str(exc.code), exc.message)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, [s.path for s in samples]))
    bad = [r for r in results if isinstance(r, BadImage)]
    if bad and bad_images == "fail":
        listed = "; ".join(f"{b.path} ({b.code})" for b in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(
            f"{len(bad)} unreadable image(s) in {what}: {listed}{more};"
            " fix or remove them, or pass --bad-images skip"
        )
    keep = [i for i, r in enumerate(results) if not isinstance(r, BadImage)]
    if bad:
        log.warning(
            "skipped %d unreadable image(s) in %s: %s",
            len(bad),
            what,
            "; ".join(f"{b.path} ({b.code})" for b in bad[:10]),
        )
    if not keep and require_some:
        raise DataError(f"no readable images in {what} ({len(bad)} unreadable)")
    pixels = np.stack([results[i] for i in keep]) if keep else np.zeros((0, h, w, 3), np.uint8)
    labels = [samples[i].label for i in keep]
    return DecodedImages(
        pixels=pixels,
        targets=np.array([int(lb == positive_class) for lb in labels], dtype=np.int64),
        paths=[samples[i].path for i in keep],
        labels=labels,
        bad=bad,
    )


# --------------------------------------------------------------------------- tf.data


@dataclass(frozen=True)
class Augmentation:
    """Random transforms applied to training batches in tf.data (never inside the model).
    Factors follow Keras' preprocessing layers (rotation in fractions of a full turn)."""

    flip: bool = True
    rotation: float = 0.05
    zoom: float = 0.1
    shift: float = 0.1
    brightness: float = 0.15
    shear: float = 0.05

    def layers(self, seed: int) -> list[Any]:
        import keras

        out: list[Any] = []
        if self.flip:
            out.append(keras.layers.RandomFlip("horizontal", seed=seed))
        if self.rotation:
            out.append(keras.layers.RandomRotation(self.rotation, fill_mode="reflect", seed=seed))
        if self.zoom:
            out.append(keras.layers.RandomZoom(self.zoom, fill_mode="reflect", seed=seed))
        if self.shift:
            out.append(
                keras.layers.RandomTranslation(
                    self.shift, self.shift, fill_mode="reflect", seed=seed
                )
            )
        if self.shear:
            out.append(
                keras.layers.RandomShear(
                    x_factor=self.shear, y_factor=0.0, fill_mode="reflect", seed=seed
                )
            )
        if self.brightness:
            out.append(
                keras.layers.RandomBrightness(self.brightness, value_range=(0, 255), seed=seed)
            )
        return out


def make_dataset(
    images: DecodedImages,
    *,
    batch_size: int,
    preprocessing: str = "none",
    augmentation: Augmentation | None = None,
    shuffle: bool = False,
    oversample: bool = False,
    seed: int = 0,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(x, y)``: float32 pixels (augmented, then
    preprocessed) and float32 targets. Decoded pixels are cached, batches prefetched.

    With ``preprocessing="none"`` and no augmentation, ``x`` is exactly the loader's pixels.
    ``oversample`` draws both classes equally often (an epoch is twice the larger class).
    """
    import tensorflow as tf

    from models.preprocessing import get_preprocessing, preprocess

    spec = get_preprocessing(preprocessing)
    targets = images.targets.astype(np.float32)

    def source(idx: np.ndarray) -> Any:
        return tf.data.Dataset.from_tensor_slices((images.pixels[idx], targets[idx])).cache()

    if oversample and len(set(images.targets.tolist())) == 2:
        parts = []
        for cls in (0, 1):
            idx = np.flatnonzero(images.targets == cls)
            part = source(idx).shuffle(len(idx), seed=seed + cls, reshuffle_each_iteration=True)
            parts.append(part.repeat())
        n = 2 * int(max(np.bincount(images.targets, minlength=2)))
        ds = tf.data.Dataset.sample_from_datasets(parts, weights=[0.5, 0.5], seed=seed).take(n)
    else:
        ds = source(np.arange(len(images)))
        if shuffle:
            ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augmentation is not None:
        layers = augmentation.layers(seed)

        def augment(x: Any, y: Any) -> Any:
            for layer in layers:
                x = layer(x, training=True)
            return tf.clip_by_value(x, 0.0, 255.0), y

        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    if not spec.is_identity:
        ds = ds.map(lambda x, y: (preprocess(x, spec), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
