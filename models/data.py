"""Labeled data for training and evaluation: find it, check it, decode it, feed it to Keras.

Layouts: ``DIR/train/<class>/`` with ``DIR/val/<class>/`` (or without, plus a validation
split), ``DIR/<class>/`` plus a validation split, or a CSV with ``path,label`` (paths relative
to the CSV; an optional ``split`` column with ``train``/``val``). Class names are sorted, the
way Keras' directory loaders sort them; the target is 1 for the positive class.

Pixels come from :func:`models.imageio.load_image`, the loader scoring uses, so training sees
the same pixels scoring will. Decoding happens once, on a thread pool; TensorFlow is imported
only by the tf.data functions (:func:`make_dataset` and the transforms it maps).
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
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
    Factors follow Keras' preprocessing layers (rotation in fractions of a full turn).

    The photo degradations (``contrast`` to ``jpeg_quality``, off by default, see
    :meth:`with_photo_degradations`) make face crops look like faces cut from real photos;
    each applies to an image with probability ``photo_p``, at a random strength.
    """

    flip: bool = True
    rotation: float = 0.05
    zoom: float = 0.1
    shift: float = 0.1
    brightness: float = 0.15
    shear: float = 0.05
    #: Contrast and saturation scaled by a factor in [1 - x, 1 + x] (0: off).
    contrast: float = 0.0
    saturation: float = 0.0
    #: Gaussian blur with a sigma in [0, blur_sigma] pixels (0: off).
    blur_sigma: float = 0.0
    #: Downscaled to a side fraction in [min_scale, 1] and back up (1: off).
    min_scale: float = 1.0
    #: JPEG re-compression at a quality in [low, high] (None: off).
    jpeg_quality: tuple[int, int] | None = None
    photo_p: float = 0.5

    def with_photo_degradations(self) -> Augmentation:
        """These transforms plus the photo degradations ``--photo-augment`` trains with."""
        return replace(
            self,
            contrast=0.3,
            saturation=0.3,
            blur_sigma=1.5,
            min_scale=0.35,
            jpeg_quality=(30, 95),
        )

    @property
    def degrades_photos(self) -> bool:
        """Whether any photo degradation is on."""
        return bool(
            self.contrast
            or self.saturation
            or self.blur_sigma
            or self.min_scale < 1.0
            or self.jpeg_quality
        )

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


def degrade_photos(x: Any, aug: Augmentation, key: Any) -> Any:
    """``aug``'s photo degradations of a float32 batch ``(n, h, w, 3)`` in [0, 255] with
    static ``h, w``; ``key`` (two integers) seeds every draw, so a batch and key always give
    the same result. Returns a batch of the same shape in [0, 255]."""
    import tensorflow as tf

    # The order a photo goes through them: colour (camera), blur (optics, motion), lost
    # resolution (a small face in the photo), JPEG (saving it) last.
    k_contrast, k_saturation, k_blur, k_scale, k_jpeg = tf.unstack(
        tf.random.experimental.stateless_split(key, 5)
    )
    n = tf.shape(x)[0]
    if aug.contrast:
        chosen, u = _draws(k_contrast, n, aug.photo_p)
        mean = tf.reduce_mean(x, axis=(1, 2), keepdims=True)
        x = tf.where(_each(chosen), mean + _each(_spread(u, aug.contrast)) * (x - mean), x)
    if aug.saturation:
        chosen, u = _draws(k_saturation, n, aug.photo_p)
        gray = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        x = tf.where(_each(chosen), gray + _each(_spread(u, aug.saturation)) * (x - gray), x)
    x = tf.clip_by_value(x, 0.0, 255.0)
    if aug.blur_sigma:
        chosen, u = _draws(k_blur, n, aug.photo_p)
        x = tf.where(_each(chosen), _gaussian_blur(x, u * aug.blur_sigma, aug.blur_sigma), x)
    if aug.min_scale < 1.0:
        chosen, u = _draws(k_scale, n, aug.photo_p)
        scale = aug.min_scale + (1.0 - aug.min_scale) * u
        x = _map_chosen(_lower_resolution, x, chosen, scale)
    if aug.jpeg_quality:
        low, high = aug.jpeg_quality
        chosen, u = _draws(k_jpeg, n, aug.photo_p)
        quality = tf.floor(low + (high - low + 1) * u)
        x = _map_chosen(_recompress, tf.clip_by_value(x, 0.0, 255.0), chosen, quality)
    return tf.clip_by_value(x, 0.0, 255.0)


def _draws(key: Any, n: Any, p: float) -> tuple[Any, Any]:
    """Which of ``n`` images a degradation applies to (probability ``p``) and a uniform draw
    in [0, 1) per image for its strength."""
    import tensorflow as tf

    k_chosen, k_strength = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    chosen = tf.random.stateless_uniform([n], k_chosen) < p
    return chosen, tf.random.stateless_uniform([n], k_strength)


def _each(v: Any) -> Any:
    """A per-image vector shaped to broadcast over ``(n, h, w, 3)``."""
    return v[:, None, None, None]


def _spread(u: Any, spread: float) -> Any:
    return 1.0 - spread + 2.0 * spread * u


def _gaussian_blur(x: Any, sigma: Any, max_sigma: float) -> Any:
    """Separable Gaussian blur with one ``sigma`` per image: one depthwise convolution per
    axis with the batch folded into the channels, so each image gets its own kernel (2.5x
    faster than shifted weighted sums)."""
    import tensorflow as tf

    radius = max(1, math.ceil(3.0 * max_sigma))
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    # sigma 0 gives a unit impulse: exp(-t^2 / tiny) underflows to 0 off the centre.
    s = tf.maximum(sigma, 1e-3)[:, None]
    weights = tf.exp(-(taps[None, :] ** 2) / (2.0 * s**2))
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
    n, (h, w, c) = tf.shape(x)[0], x.shape[1:]
    kernel = tf.transpose(tf.repeat(weights, c, axis=0))  # (taps, n * c)
    folded = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, w, n * c])
    pad = tf.pad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    out = tf.nn.depthwise_conv2d(pad, kernel[None, :, :, None], [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, kernel[:, None, :, None], [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(out[0], [h, w, n, c]), [2, 0, 1, 3])


def _lower_resolution(image: Any, scale: Any) -> Any:
    import tensorflow as tf

    h, w = image.shape[0], image.shape[1]
    size = tf.maximum(tf.cast(tf.round(scale * tf.constant([h, w], tf.float32)), tf.int32), 1)
    # Antialiased like a camera's or a resizer's downscale; bilinear back up like the
    # aligner's upscale of a small face.
    small = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.image.resize(small, (h, w), method="bilinear")


def _recompress(image: Any, quality: Any) -> Any:
    import tensorflow as tf

    pixels = tf.cast(tf.round(image), tf.uint8)
    out = tf.image.adjust_jpeg_quality(pixels, tf.cast(quality, tf.int32))
    return tf.ensure_shape(tf.cast(out, tf.float32), image.shape)


def _map_chosen(fn: Any, x: Any, chosen: Any, param: Any) -> Any:
    """``fn(image, param)`` on the chosen images of ``x`` only: resizing and JPEG coding go
    image by image, so the others skip the cost."""
    import tensorflow as tf

    idx = tf.where(chosen)
    done = tf.map_fn(
        lambda args: fn(*args),
        (tf.gather_nd(x, idx), tf.gather_nd(param, idx)),
        fn_output_signature=tf.TensorSpec(x.shape[1:], x.dtype),
    )
    return tf.tensor_scatter_nd_update(x, idx, done)


def mix_pairs(x: Any, y: Any, alpha: float, key: Any) -> tuple[Any, Any]:
    """Mixup (Zhang et al. 2018): each image of the batch blended with a random partner,
    ``lam * own + (1 - lam) * partner`` with ``lam ~ Beta(alpha, alpha)`` per image; its
    float target blended alike. ``key`` (two integers) seeds the draws."""
    import tensorflow as tf

    k_partner, k_a, k_b = tf.unstack(tf.random.experimental.stateless_split(key, 3))
    n = tf.shape(x)[0]
    partner = tf.argsort(tf.random.stateless_uniform([n], k_partner))
    # Beta(a, a) as G_a / (G_a + G_b); a small alpha can give two zeros: lam 0, the partner.
    g_a = tf.random.stateless_gamma([n], k_a, alpha)
    g_b = tf.random.stateless_gamma([n], k_b, alpha)
    lam = tf.math.divide_no_nan(g_a, g_a + g_b)
    x_mixed = _each(lam) * x + _each(1.0 - lam) * tf.gather(x, partner)
    return x_mixed, lam * y + (1.0 - lam) * tf.gather(y, partner)


def make_dataset(
    images: DecodedImages,
    *,
    batch_size: int,
    preprocessing: str = "none",
    augmentation: Augmentation | None = None,
    mixup: float = 0.0,
    class_weight: dict[int, float] | None = None,
    shuffle: bool = False,
    oversample: bool = False,
    seed: int = 0,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(x, y)``: float32 pixels (augmented, mixed, then
    preprocessed) and float32 targets. Decoded pixels are cached, batches prefetched.

    With ``preprocessing="none"`` and no augmentation, ``x`` is exactly the loader's pixels.
    ``oversample`` draws both classes equally often (an epoch is twice the larger class).
    ``mixup`` > 0 blends pairs of images (:func:`mix_pairs`, Beta parameter ``mixup``): for
    training batches only. ``class_weight`` ({0: w0, 1: w1}) adds a third element, sample
    weights ``w0 + (w1 - w0) * y``: for a mixed target, the mix of its two images' weights
    (Keras' own ``class_weight`` would round the target to one class).
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
        if augmentation.degrades_photos:
            ds = _keyed_map(ds, lambda x, y, key: (degrade_photos(x, augmentation, key), y), seed)
    if mixup:
        ds = _keyed_map(ds, lambda x, y, key: mix_pairs(x, y, mixup, key), seed + 1)
    if class_weight is not None:
        w0, w1 = float(class_weight[0]), float(class_weight[1])
        ds = ds.map(lambda x, y: (x, y, w0 + (w1 - w0) * y), num_parallel_calls=tf.data.AUTOTUNE)
    if not spec.is_identity:
        ds = ds.map(
            lambda x, y, *w: (preprocess(x, spec), y, *w), num_parallel_calls=tf.data.AUTOTUNE
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def _keyed_map(ds: Any, fn: Any, seed: int) -> Any:
    """``ds.map(fn)`` with a random key per batch as ``fn``'s last argument, for stateless
    random ops: seeded, new every epoch, and the same however tf.data parallelises the map
    (stateful random ops would depend on the order the parallel calls run in)."""
    import tensorflow as tf

    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, keys)).map(
        lambda xy, key: fn(*xy, key), num_parallel_calls=tf.data.AUTOTUNE
    )
