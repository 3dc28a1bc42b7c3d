"""Reading the scores file (docs/contracts.md) into checked numpy arrays.

A scores file has ``row``, ``id``, ``path``, ``status``, one ``p_<model>`` column per model
(P of that model's positive class, null on error rows), optionally ``true_label``, and the key
``genderscore`` in its Parquet metadata describing the models. A committed output (a folder,
or an ``s3://``/``gs://`` prefix) is read by its ``_manifest.json`` (see
:mod:`scoring.objectstore`): only the parts it lists.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ensemble.groups import AuditOptions, Grouping, make_grouping
from models.descriptor import COLUMN_PREFIX, column_name
from models.errors import DataError, UsageError
from models.probabilities import flip_where
from scoring.modelset import MODEL_FILE_KEYS

META_KEY = b"genderscore"
LABEL_COLUMN = "true_label"
ENSEMBLE_COLUMN = "p_ensemble"


@dataclass(frozen=True)
class ScoresFile:
    """A scoring output: the table (all rows) and the models its metadata describes."""

    path: str
    table: pa.Table
    meta: dict
    models: list[dict]

    @property
    def model_names(self) -> list[str]:
        return [m["name"] for m in self.models]

    def model_pairs(self) -> list[tuple[str, str]]:
        """``(name, sha256)`` of every scored model, for ``EnsembleSpec.check_models``."""
        return [(m["name"], m["sha256"]) for m in self.models]

    def ok_mask(self) -> np.ndarray:
        return np.asarray(self.table.column("status").to_numpy(zero_copy_only=False) == "ok")

    def probs(self, name: str, mask: np.ndarray | None = None) -> np.ndarray:
        """``p_<name>`` as float32 (NaN for nulls), optionally only the rows in ``mask``."""
        col = self.table.column(column_name(name)).to_numpy(zero_copy_only=False).astype(np.float32)
        return col if mask is None else col[mask]


def read_scores(path: str | Path | Sequence[str | Path], storage: Any = None) -> ScoresFile:
    """Read a scores Parquet file, a folder of them, a list of files (one scoring run), or a
    committed output on object storage (``s3://...``, with the
    :class:`scoring.storage.StorageOptions` ``storage``), and check its columns and metadata."""
    from scoring.storage import is_uri

    filesystem = None
    if isinstance(path, list | tuple):
        files = [Path(f) for f in path]
        if not files:
            raise DataError("no scores files given")
        path = files[0].parent
    elif is_uri(os.fspath(path)):
        path, files, filesystem = _object_files(os.fspath(path), storage)
    elif Path(path).is_dir():
        path = Path(path)
        _refuse_nightly_root(path)
        files = _folder_files(path)
    elif Path(path).exists():
        path = Path(path)
        files = [path]
    else:
        raise DataError(f"scores file {path} does not exist")
    tables, metas = [], []
    for f in files:
        try:
            t = pq.read_table(f, filesystem=filesystem)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{f} is not a readable Parquet file: {exc}") from None
        tables.append(t)
        metas.append(_metadata(t, f))
    models = metas[0]["models"]
    for f, m in zip(files[1:], metas[1:], strict=True):
        if [(x["name"], x["sha256"]) for x in m["models"]] != [
            (x["name"], x["sha256"]) for x in models
        ]:
            raise DataError(f"{f} was scored with other models than {files[0]}: keep one run")
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except pa.ArrowInvalid as exc:
        raise DataError(f"the files under {path} have incompatible columns: {exc}") from None
    if "status" not in table.column_names:
        raise DataError(f"{path} has no 'status' column: it is not a scoring output")
    names = [m["name"] for m in models]
    for name in names:
        if column_name(name) not in table.column_names:
            raise DataError(
                f"{path}: the metadata lists model {name!r} but there is no {column_name(name)}"
            )
    unknown = [
        c
        for c in table.column_names
        if c.startswith(COLUMN_PREFIX)
        and c != ENSEMBLE_COLUMN
        and c.removeprefix(COLUMN_PREFIX) not in names
    ]
    if unknown:
        raise DataError(
            f"{path}: unknown model column(s) {', '.join(unknown)}: the file's metadata does not "
            f"describe them (described: {', '.join(names)}); score again or drop the column"
        )
    return ScoresFile(path=str(path), table=table, meta=metas[0], models=models)


def _folder_files(path: Path) -> list[Path] | list[str]:
    """A committed output's listed parts; else every Parquet file, hidden and '_'-prefixed
    entries skipped as pyarrow's dataset discovery does (unfinished parts are staged in a
    hidden folder)."""
    from scoring.objectstore import read_committed

    committed = read_committed(path)
    if committed is not None:
        return committed.files
    files = sorted(
        f
        for f in path.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in f.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"{path} holds no .parquet files: give a scoring output")
    return files


def _object_files(uri: str, storage: Any) -> tuple[str, list[str], Any]:
    """``(uri, files, file system)`` of one Parquet object or a committed output's listed
    parts; an uncommitted prefix is refused (its parts may be unfinished or duplicated)."""
    from pyarrow import fs as pafs

    from scoring.objectstore import read_committed
    from scoring.storage import filesystem_for, unusable_store

    try:
        filesystem, inner = filesystem_for(uri, storage)
        kind = filesystem.get_file_info(inner).type
        if kind == pafs.FileType.File:
            return uri, [inner], filesystem
        if kind == pafs.FileType.NotFound:
            raise DataError(f"scores {uri} does not exist")
        committed = read_committed(uri, storage)
        if committed is None:
            _refuse_nightly_root(uri, storage)
            raise DataError(
                f"{uri} is not a committed scoring output (no _SUCCESS): give a committed run's "
                "prefix (OUT/run_date=YYYY-MM-DD) or one Parquet object"
            )
    except OSError as exc:
        raise DataError(unusable_store(uri, storage, "scores", exc)) from None
    return uri, committed.files, filesystem


def _refuse_nightly_root(path: Path | str, storage: Any = None) -> None:
    """A nightly ``scoring run --out`` holds one ``run_date=YYYY-MM-DD`` folder per run: its
    dates are separate runs (the same rows again, or with --incremental only the new ones),
    so they are never read as one set of scores."""
    from scoring.nightly import committed_dates

    dates = [str(folder) for _, folder in committed_dates(path, storage)]
    if dates:
        names = ", ".join(d.rsplit("/", 1)[-1] for d in dates[-3:])
        raise DataError(
            f"{path} holds nightly runs ({names}{', ...' if len(dates) > 3 else ''}"
            f"): give one date's folder, e.g. {dates[-1]}"
        )


def _metadata(table: pa.Table, path: Path) -> dict:
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise DataError(
            f"{path} has no 'genderscore' Parquet metadata: give a file written by "
            "'genderscore scoring run'"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: the 'genderscore' metadata is not valid JSON: {exc}") from None
    models = meta.get("models") if isinstance(meta, dict) else None
    if not isinstance(models, list) or not models:
        raise DataError(f"{path}: the 'genderscore' metadata lists no models")
    for i, m in enumerate(models):
        missing = [k for k in MODEL_FILE_KEYS if not isinstance(m, dict) or k not in m]
        if missing:
            raise DataError(f"{path}: metadata models[{i}] lacks {', '.join(missing)}")
    return meta


@dataclass(frozen=True)
class LabeledScores:
    """The usable labeled rows of a scores file, as arrays.

    ``X`` holds P(``positive``) per model (columns in ``models`` order, flipped where a
    model's own positive class is the other one); ``raw`` the columns as scored.
    """

    X: np.ndarray
    raw: dict[str, np.ndarray]
    y: np.ndarray
    ids: np.ndarray
    models: list[dict]
    class_names: tuple[str, str]
    positive: str
    n_total: int
    n_dropped: int
    fingerprint: dict = field(default_factory=dict)

    @property
    def negative(self) -> str:
        return next(c for c in self.class_names if c != self.positive)

    @property
    def ordered_classes(self) -> tuple[str, str]:
        """(negative, positive): the order binary metrics use."""
        return (self.negative, self.positive)


def _chosen_models(
    scores: ScoresFile, positive: str, models: Sequence[str] | None
) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The models asked for (all by default) and their two classes, ``positive`` one of them."""
    names = list(models) if models is not None else scores.model_names
    by_name = {m["name"]: m for m in scores.models}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DataError(
            f"{scores.path} has no scores of model(s) {', '.join(unknown)} "
            f"(scored: {', '.join(by_name)})"
        )
    chosen = [by_name[n] for n in names]
    classes = tuple(chosen[0]["class_names"])
    for m in chosen[1:]:
        if set(m["class_names"]) != set(classes):
            raise DataError(
                f"models disagree on the classes: {chosen[0]['name']} has {list(classes)}, "
                f"{m['name']} has {m['class_names']}"
            )
    if len(classes) != 2:
        raise DataError(f"the models' classes must be two, got {list(classes)}")
    if positive not in classes:
        raise UsageError(
            f"--positive {positive!r} is not one of the models' classes {list(classes)}"
        )
    return chosen, classes


def _labels(
    scores: ScoresFile, ok: np.ndarray, classes: tuple[str, ...], positive: str
) -> tuple[np.ndarray, np.ndarray]:
    """The ok rows' labels as strings, and as 0/1 targets (1 = ``positive``); both classes."""
    n_ok = int(ok.sum())
    labels = scores.table.column(LABEL_COLUMN).to_numpy(zero_copy_only=False)[ok]
    missing = np.array([v is None or v != v for v in labels])
    if missing.any():
        raise DataError(
            f"{int(missing.sum())} ok row(s) of {scores.path} have no {LABEL_COLUMN}: "
            "label them or drop them"
        )
    labels = labels.astype(str)
    strange = sorted(set(np.unique(labels).tolist()) - set(classes))
    if strange:
        raise DataError(
            f"{scores.path}: labels {strange[:5]} are not the models' classes {list(classes)}"
        )
    y = (labels == positive).astype(np.int64)
    if y.min() == y.max():
        raise DataError(
            f"{scores.path}: the labels hold one class only (all {n_ok} ok rows are "
            f"{labels[0]!r}); tuning and evaluation need both classes"
        )
    return labels, y


def labeled_scores(
    scores: ScoresFile, positive: str, models: Sequence[str] | None = None
) -> LabeledScores:
    """Rows with status ok, their labels (1 = ``positive``) and the chosen models' scores.

    One DataError per problem: no label column, unlabeled or unknown labels, NaN scores,
    one class only.
    """
    chosen, classes = _chosen_models(scores, positive, models)
    if LABEL_COLUMN not in scores.table.column_names:
        raise DataError(
            f"{scores.path} has no label column {LABEL_COLUMN!r}: tune and evaluate need "
            "labeled scores (score a manifest that has a label column)"
        )
    ok = scores.ok_mask()
    n_ok = int(ok.sum())
    if n_ok == 0:
        raise DataError(f"{scores.path} has no rows with status ok ({len(ok)} rows in all)")
    labels, y = _labels(scores, ok, classes, positive)
    raw = {m["name"]: scores.probs(m["name"], ok) for m in chosen}
    for name, p in raw.items():
        n_nan = int(np.isnan(p).sum())
        if n_nan:
            raise DataError(
                f"{scores.path}: {n_nan} ok row(s) have a NaN score in {column_name(name)}: re-score them "
                "or mark them as errors"
            )
    X = flip_where(
        np.column_stack([raw[m["name"]] for m in chosen]),
        [m["positive_class"] != positive for m in chosen],
    )
    id_col = "id" if "id" in scores.table.column_names else "row"
    ids = np.asarray(scores.table.column(id_col).to_numpy(zero_copy_only=False)[ok]).astype(str)
    return LabeledScores(
        X=X,
        raw=raw,
        y=y,
        ids=ids,
        models=chosen,
        class_names=classes,
        positive=positive,
        n_total=len(ok),
        n_dropped=len(ok) - n_ok,
        fingerprint=fingerprint(ids, labels, raw, classes),
    )


def kept_column(scores: ScoresFile, column: str) -> list:
    """A manifest column kept in the scores (``scoring run --keep-columns``), at the rows
    :func:`labeled_scores` uses (status ok), as Python values (None for nulls)."""
    if column not in scores.table.column_names:
        raise DataError(
            f"{scores.path} has no column {column!r} to group by (its columns: "
            f"{', '.join(scores.table.column_names)}); score with 'genderscore scoring run "
            f"--keep-columns {column}' (or 'ensemble tune --manifest ... --group-by {column}')"
        )
    values = scores.table.column(column).to_pylist()
    return [v for v, ok in zip(values, scores.ok_mask(), strict=True) if ok]


def score_groupings(scores: ScoresFile, options: AuditOptions) -> tuple[Grouping, ...]:
    """One :class:`~ensemble.groups.Grouping` per ``--group-by`` column, over the rows
    :func:`labeled_scores` uses."""
    return tuple(
        make_grouping(
            column,
            kept_column(scores, column),
            edges=options.bands.get(column),
            min_group=options.min_group,
        )
        for column in options.group_by
    )


def fingerprint(
    ids: np.ndarray, labels: np.ndarray, raw: dict[str, np.ndarray], classes: Sequence[str]
) -> dict:
    """Rows, label counts and a SHA-256 of ids, labels and scores: which data tuned this."""
    h = hashlib.sha256()
    h.update("\0".join(ids.tolist()).encode())
    h.update(b"\1" + "\0".join(labels.tolist()).encode())
    for name in sorted(raw):
        h.update(b"\1" + name.encode() + raw[name].astype("<f4").tobytes())
    return {
        "rows": len(ids),
        "label_counts": {c: int((labels == c).sum()) for c in classes},
        "sha256": h.hexdigest(),
    }
