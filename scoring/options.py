"""The options of a scoring run, checked in one place before any work starts."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from models.errors import UsageError
from models.framing import parse_face_mode
from scoring.manifest import ManifestColumns
from scoring.storage import (
    DEFAULT_READ_CONCURRENCY,
    DEFAULT_READ_TIMEOUT,
    RemoteReads,
    StorageOptions,
)

#: Throughput is flat from 8 to 32 images on CPU; an actor's ORT memory is not (three fp32
#: 224 px models: 1.2 / 1.7 / 2.5 GB at 8 / 16 / 32).
DEFAULT_BATCH_SIZE = 16
MAX_BATCH_SIZE = 4096
#: Seconds without a scored row or a new output file before a run gives up. Generous: it
#: also covers the actors' start-up (model loading on a busy node takes minutes at worst).
DEFAULT_STALL_TIMEOUT = 1800.0


@dataclass(frozen=True)
class ScoringOptions:
    """Everything :func:`scoring.run.score_manifest` accepts besides manifest, models and out."""

    path_column: str = "path"
    id_column: str | None = None
    label_column: str | None = None
    keep_columns: tuple[str, ...] = ()
    root: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    num_workers: int | None = None
    worker_threads: int = 1
    ray_address: str | None = None
    force: bool = False
    progress: bool = True
    #: Rows per staged manifest part (the unit of a read task).
    rows_per_part: int = 4_096
    #: Rows per output Parquet file (at least; also what a crash can lose).
    rows_per_file: int = 5_000
    #: Seconds without progress before the run fails instead of waiting forever; 0: never.
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    #: pyarrow file-system options for object-store URIs (``KEY=VALUE`` texts or a mapping).
    storage_options: Any = None
    #: Seconds one object-store image may take before its row is a ``timeout`` error.
    read_timeout: float = DEFAULT_READ_TIMEOUT
    #: Object-store images a scorer actor fetches at once per batch.
    read_concurrency: int = DEFAULT_READ_CONCURRENCY
    #: Face framing for every model (off, align, require); default: each model's own.
    faces: str | None = None

    @property
    def columns(self) -> ManifestColumns:
        return ManifestColumns(
            path=self.path_column,
            id=self.id_column,
            label=self.label_column,
            keep=self.keep_columns,
        )

    @property
    def storage(self) -> StorageOptions:
        return StorageOptions.parse(self.storage_options)

    @property
    def reads(self) -> RemoteReads:
        return RemoteReads(self.storage, self.read_concurrency, self.read_timeout)


def check_options(
    *,
    models: Sequence[str | os.PathLike[str]] | None,
    ensemble: str | os.PathLike[str] | None,
    out: str | os.PathLike[str] | None,
    options: ScoringOptions,
) -> ScoringOptions:
    """UsageError naming the option and the fix; returns the options with lists normalised."""
    if (not models) == (ensemble is None):
        raise UsageError(
            "give either --models A.onnx [B.onnx ...] or --ensemble ENSEMBLE.json (not both)"
            if models
            else "no models: give --models A.onnx [B.onnx ...] or --ensemble ENSEMBLE.json"
        )
    if out is None or not os.fspath(out).strip():
        raise UsageError("no output folder: give --out DIR")
    for name in ("path_column", "id_column", "label_column"):
        value = getattr(options, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UsageError(f"--{name.replace('_', '-')} must be a column name, got {value!r}")
    keep = _split_columns(options.keep_columns)
    _positive_int(options.batch_size, "--batch-size", high=MAX_BATCH_SIZE)
    if options.num_workers is not None:
        _positive_int(options.num_workers, "--num-workers")
    _positive_int(options.worker_threads, "--worker-threads")
    _positive_int(options.rows_per_part, "rows_per_part")
    _positive_int(options.rows_per_file, "rows_per_file")
    _seconds(options.stall_timeout, "--stall-timeout")
    _seconds(options.read_timeout, "--read-timeout")
    if options.read_timeout == 0:
        raise UsageError("--read-timeout must be more than 0 seconds")
    _positive_int(options.read_concurrency, "--read-concurrency", high=256)
    storage = StorageOptions.parse(options.storage_options)
    if options.faces is not None:
        parse_face_mode(options.faces)
    if options.root is not None and not os.fspath(options.root).strip():
        raise UsageError("--root must name a folder")
    if options.root is not None and "://" not in os.fspath(options.root):
        if not os.path.isdir(os.path.expanduser(os.fspath(options.root))):
            raise UsageError(f"--root {options.root} is not a folder")
    values = {f.name: getattr(options, f.name) for f in fields(options)}
    return ScoringOptions(**{**values, "keep_columns": keep, "storage_options": storage})


def _split_columns(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"a,b"``, ``["a", "b"]`` or ``["a,b"]`` -> ``("a", "b")``."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        out += [c.strip() for c in str(item).split(",") if c.strip()]
    return tuple(out)


def _positive_int(value: object, name: str, *, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive whole number, got {value!r}")
    if high is not None and value > high:
        raise UsageError(f"{name} must be at most {high}, got {value}")


def _seconds(value: object, name: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise UsageError(
            f"{name} must be a number of seconds, 0 or more (0: no limit), got {value!r}"
        )
