"""The demo's images: generated synthetic faces, or a bounded sample of a real labeled folder.

Either way the demo ends up with three CSV lists (``path,label``) under ``OUT/data``:
``train.csv`` (the training run's data, with a ``split`` column: its train and val rows),
``val.csv`` (what the ensemble is tuned on) and ``test.csv`` (the manifest the tuned ensemble
scores: images no model and no threshold has seen). Real images are listed, never copied.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data import Sample, class_names_of, discover_data, scan_class_folders
from models.errors import DataError
from models.synthetic import write_synthetic_dataset

#: Validation and test images per class, as a share of the training images per class.
HELD_OUT_SHARE = 0.5
#: At least this many validation and test images per class: ``ensemble tune`` folds its
#: validation set five ways per class for the method comparison.
MIN_HELD_OUT = 10


@dataclass(frozen=True)
class DemoData:
    """Where the demo's image lists are, and what they hold."""

    synthetic: bool
    source: str
    train_csv: Path
    val_csv: Path
    test_csv: Path
    class_names: tuple[str, str]
    counts: dict[str, dict[str, int]]  # split -> class -> images

    def describe(self) -> str:
        parts = [
            f"{split} {sum(c.values())} ({', '.join(f'{k} {v}' for k, v in c.items())})"
            for split, c in self.counts.items()
        ]
        return "; ".join(parts)


def held_out_per_class(train_per_class: int) -> int:
    """Validation (and test) images per class for ``train_per_class`` training images."""
    return max(MIN_HELD_OUT, int(round(train_per_class * HELD_OUT_SHARE)))


def synthetic_data(folder: Path, per_class: int, size: int, seed: int) -> DemoData:
    """Generate ``train/``, ``val/`` and ``test/`` folders of synthetic faces (drawn shapes,
    no real people) at ``size`` px, with their CSV lists."""
    held_out = held_out_per_class(per_class)
    # One call per split size; distinct seeds so no image repeats across splits.
    write_synthetic_dataset(
        folder, per_class, splits=("train",), size=(size, size), seed=seed, with_csv=True
    )
    write_synthetic_dataset(
        folder, held_out, splits=("val", "test"), size=(size, size), seed=seed + 1, with_csv=True
    )
    # write_synthetic_dataset lists each split with paths relative to ``folder``; training
    # reads one list of both its parts, as it does for real data.
    train_csv = folder / "train_val.csv"
    rows = [(*row, "train") for row in _read_rows(folder / "train.csv")]
    rows += [(*row, "val") for row in _read_rows(folder / "val.csv")]
    _write_csv(train_csv, ["path", "label", "split"], rows)
    classes = ("female", "male")
    counts = {
        "train": dict.fromkeys(classes, per_class),
        "val": dict.fromkeys(classes, held_out),
        "test": dict.fromkeys(classes, held_out),
    }
    return DemoData(
        synthetic=True,
        source="synthetic (models.synthetic)",
        train_csv=train_csv,
        val_csv=folder / "val.csv",
        test_csv=folder / "test.csv",
        class_names=classes,
        counts=counts,
    )


def sampled_data(source: Path, folder: Path, per_class: int, seed: int) -> DemoData:
    """List a seeded sample of a real labeled folder: at most ``per_class`` training images per
    class from its training part, and validation and test images from ``test/`` if it has one,
    else from two disjoint halves of its validation part."""
    if not source.is_dir():
        raise DataError(
            f"--data {source} is not a folder: give a folder with train/<class>/ and "
            "val/<class>/ image folders"
        )
    labeled = discover_data(source, seed=seed)
    if labeled.layout != "train/val folders":
        raise DataError(
            f"--data {source} needs train/<class>/ and val/<class>/ folders "
            f"(found {labeled.layout}); e.g. ../shared/data/utkface"
        )
    classes = labeled.class_names
    rng = np.random.default_rng(seed)
    held_out = held_out_per_class(per_class)
    train = _sample(labeled.train, classes, per_class, rng)
    test_dir = next((source / d for d in ("test",) if (source / d).is_dir()), None)
    if test_dir is not None:
        val = _sample(labeled.val, classes, held_out, rng)
        test = _sample(scan_class_folders(test_dir), classes, held_out, rng)
    else:
        val, test = _halves(labeled.val, classes, held_out, rng)
    class_names_of(test, where=f"the test images of {source}")
    folder.mkdir(parents=True, exist_ok=True)
    train_csv = folder / "train_val.csv"
    _write_csv(
        train_csv,
        ["path", "label", "split"],
        [(s.path, s.label, "train") for s in train] + [(s.path, s.label, "val") for s in val],
    )
    _write_csv(folder / "val.csv", ["path", "label"], [(s.path, s.label) for s in val])
    _write_csv(folder / "test.csv", ["path", "label"], [(s.path, s.label) for s in test])
    counts = {
        name: {c: sum(s.label == c for s in part) for c in classes}
        for name, part in (("train", train), ("val", val), ("test", test))
    }
    return DemoData(
        synthetic=False,
        source=str(source),
        train_csv=train_csv,
        val_csv=folder / "val.csv",
        test_csv=folder / "test.csv",
        class_names=classes,
        counts=counts,
    )


def _sample(
    samples: Sequence[Sample], classes: Sequence[str], n: int, rng: np.random.Generator
) -> list[Sample]:
    """At most ``n`` samples per class, drawn without replacement, in a stable order."""
    picked: list[Sample] = []
    for c in classes:
        of_class = sorted((s for s in samples if s.label == c), key=lambda s: s.path)
        if of_class:
            idx = rng.choice(len(of_class), size=min(n, len(of_class)), replace=False)
            picked += [of_class[i] for i in sorted(idx)]
    return picked


def _halves(
    samples: Sequence[Sample], classes: Sequence[str], n: int, rng: np.random.Generator
) -> tuple[list[Sample], list[Sample]]:
    """Two disjoint samples of at most ``n`` per class (half of a class each when it is small)."""
    first: list[Sample] = []
    second: list[Sample] = []
    for c in classes:
        of_class = sorted((s for s in samples if s.label == c), key=lambda s: s.path)
        order = rng.permutation(len(of_class))
        k = min(n, len(of_class) // 2)
        if k < 1:
            raise DataError(
                f"too few validation images of class {c!r} to hold out a test set: "
                f"{len(of_class)} (need 2+)"
            )
        first += [of_class[i] for i in sorted(order[:k])]
        second += [of_class[i] for i in sorted(order[k : 2 * k])]
    return first, second


def _read_rows(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        return [(p, label) for p, label in reader]


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([os.fspath(v) for v in row] for row in rows)
