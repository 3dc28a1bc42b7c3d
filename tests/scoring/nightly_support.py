"""Helpers of the nightly tests: small face images, manifests with ids, the output's rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.synthetic import synthetic_face


def write_faces(folder: Path, n: int, size: int = 48, seed: int = 0) -> list[Path]:
    """``n`` small synthetic face JPEGs; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"face{i:03d}.jpg"
        synthetic_face(i % 2, rng, (size, size)).save(path, quality=90)
        paths.append(path)
    return paths


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A CSV ``image_id,path`` with one line per ``(id, path)``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path"])
        w.writerows(rows)
    return path


def id_rows(ids: range | list[int], faces: list[Path], bad: set[int] = frozenset()) -> list:
    """Manifest rows ``img<i>`` pointing at the faces in turn; ids in ``bad`` name no file."""
    return [
        (
            f"img{i}",
            str(faces[i % len(faces)].parent / "missing.jpg")
            if i in bad
            else str(faces[i % len(faces)]),
        )
        for i in ids
    ]


def read_date(folder: Path) -> pa.Table:
    return pq.read_table(sorted(folder.glob("part-*.parquet"))).sort_by("row")


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "_summary.json").read_text())
