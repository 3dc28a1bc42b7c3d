"""``run.json``: what a training run recorded beside its model (no TensorFlow here).

``convert --preprocess auto``, ``models evaluate`` and ``models predict`` read it to learn the
preprocessing, class names, positive class and input size the model was trained with. A
``run.json`` describes the file whose SHA-256 it records; a model file changed after
training is refused rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import DataError
from models.framing import Framing
from models.jsonable import jsonable
from models.preprocessing import PREPROCESSING

RUN_INFO_FILENAME = "run.json"
RUN_INFO_SCHEMA_VERSION = 1
MODEL_FILENAME = "model.keras"


@dataclass(frozen=True)
class RunInfo:
    """The parts of ``run.json`` later stages rely on; everything else is in :attr:`raw`."""

    class_names: tuple[str, str]
    positive_class: str
    preprocessing: str
    image_size: tuple[int, int]
    backbone: str | None = None
    model_file: str = MODEL_FILENAME
    model_sha256: str | None = None
    seed: int | None = None
    #: How images were framed in training (``off`` for runs from before framing existed).
    framing: Framing = field(default_factory=Framing)
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def negative_class(self) -> str:
        return next(c for c in self.class_names if c != self.positive_class)

    @property
    def positive_index(self) -> int:
        """Index of the positive class in :attr:`class_names`."""
        return self.class_names.index(self.positive_class)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> RunInfo:
        """Validate a ``run.json`` mapping; :class:`DataError` names the bad key."""
        where = str(path) if path is not None else "run info"
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [
            k
            for k in ("class_names", "positive_class", "preprocessing", "image_size")
            if k not in data
        ]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
        names = data["class_names"]
        if (
            not isinstance(names, list | tuple)
            or len(names) != 2
            or not all(isinstance(n, str) and n for n in names)
            or names[0] == names[1]
        ):
            raise DataError(f"{where}: class_names must be two distinct names, got {names!r}")
        if data["positive_class"] not in names:
            raise DataError(
                f"{where}: positive_class {data['positive_class']!r} is not one of {names}"
            )
        if data["preprocessing"] not in PREPROCESSING:
            raise DataError(
                f"{where}: unknown preprocessing {data['preprocessing']!r}"
                f" (known: {', '.join(PREPROCESSING)})"
            )
        size = data["image_size"]
        if isinstance(size, int):
            size = [size, size]
        if (
            not isinstance(size, list | tuple)
            or len(size) != 2
            or not all(isinstance(v, int) and v > 0 for v in size)
        ):
            raise DataError(f"{where}: image_size must be [height, width], got {size!r}")
        return cls(
            class_names=(names[0], names[1]),
            positive_class=data["positive_class"],
            preprocessing=data["preprocessing"],
            image_size=(int(size[0]), int(size[1])),
            backbone=data.get("backbone"),
            model_file=data.get("model_file", MODEL_FILENAME),
            model_sha256=data.get("model_sha256"),
            seed=data.get("seed"),
            framing=Framing.from_dict(data.get("framing"), f"{where}: framing"),
            path=path,
            raw=dict(data),
        )


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (a folder such as a SavedModel: of its files, in path order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def read_run_info(model_path: str | os.PathLike[str], *, verify: bool = True) -> RunInfo | None:
    """The ``run.json`` that describes ``model_path`` (a model file, or a run folder), or None
    when there is none or it describes another file.

    With ``verify`` the model's SHA-256 is checked: a ``run.json`` that names this file but
    records a different hash raises :class:`DataError` (the file changed after training).
    """
    model_path = Path(model_path)
    if model_path.is_dir() and (model_path / RUN_INFO_FILENAME).is_file():
        run_json = model_path / RUN_INFO_FILENAME
    else:
        run_json = model_path.parent / RUN_INFO_FILENAME
    if not run_json.is_file():
        return None
    try:
        data = json.loads(run_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {run_json}: {exc}") from None
    info = RunInfo.from_dict(data, run_json)
    if model_path.is_dir() and model_path == run_json.parent:
        model_path = model_path / info.model_file
        if not model_path.exists():
            raise DataError(
                f"{run_json} names {info.model_file}, which is not in {run_json.parent}"
            )
    if not verify or info.model_sha256 is None:
        return info if model_path.name == info.model_file else None
    actual = sha256_file(model_path)
    if actual == info.model_sha256:
        return info
    if model_path.name == info.model_file:
        raise DataError(
            f"{model_path} changed after training: {run_json} records sha256"
            f" {info.model_sha256[:12]}..., the file has {actual[:12]}...;"
            " pass the preprocessing and classes explicitly or restore the file"
        )
    return None


def write_run_info(run_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Validate ``record`` as a :class:`RunInfo` and write it as ``run_dir/run.json``."""
    record = {"schema_version": RUN_INFO_SCHEMA_VERSION, **record}
    RunInfo.from_dict(record)
    path = Path(run_dir) / RUN_INFO_FILENAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(jsonable(record), indent=2) + "\n")
    os.replace(tmp, path)
    return path
