"""Read a manifest of image paths as a stream, check it as a whole, and stage it for Ray.

A manifest is CSV (every column read as text; UTF-8 with or without a BOM, quoted fields,
CRLF, blank lines skipped; ``.gz``/``.bz2``/``.zst`` are decompressed) or Parquet (``.parquet``,
``.pq``), local or behind an object-store URI (:mod:`scoring.storage`). ``row`` is the 0-based
number of a data record in the manifest (header and blank lines not counted). Relative paths
resolve against the manifest's own folder or prefix, or against ``--root`` when that lies in
another store (:func:`resolution_base`); ``file://`` URIs become local paths; other URIs
(``s3://``, ``gs://``) stay as they are. Nothing here opens an image: a bad path becomes an
error row later, a bad manifest a :class:`DataError` before any scoring.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.descriptor import COLUMN_PREFIX
from models.errors import DataError, UsageError
from models.imageio import storage_failure
from scoring.decode import FACE_FIELDS
from scoring.internal.hashing import sha256_stream
from scoring.storage import StorageOptions, filesystem_for, store_of, unusable_store

#: Columns every scores file has (docs/contracts.md); a kept manifest column may not reuse them.
RESERVED_COLUMNS = frozenset(
    {
        "row",
        "id",
        "path",
        "status",
        "error_code",
        "error",
        "true_label",
        "p_ensemble",
        "label",
        "threshold",
        "ensemble_version",
        *(f.name for f in FACE_FIELDS),
    }
)
PARQUET_SUFFIXES = (".parquet", ".pq")
#: The label column used when the manifest has one and --label-column is not given.
DEFAULT_LABEL_COLUMN = "label"
READ_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class ManifestColumns:
    """Which manifest columns play which part (``label=None``: ``label`` if there is one)."""

    path: str = "path"
    id: str | None = None
    label: str | None = None
    keep: tuple[str, ...] = ()

    def needed(self) -> list[str]:
        cols = [self.path, self.id, self.label, *self.keep]
        return list(dict.fromkeys(c for c in cols if c is not None))

    def to_dict(self) -> dict[str, Any]:
        """As the run summary records them."""
        return {"path": self.path, "id": self.id, "label": self.label, "keep": list(self.keep)}


@dataclass(frozen=True)
class StagedManifest:
    """What :func:`stage_manifest` wrote: rows still to score, as Parquet parts."""

    rows: int  # data records in the manifest
    todo: int  # rows written to the parts (rows minus those skipped)
    columns: ManifestColumns  # with the label column resolved
    schema: pa.Schema  # of the staged parts
    files: list[str]
    #: object store (``scheme://bucket``) -> the first image path in it
    stores: dict[str, str] = field(default_factory=dict)


def is_uri(path: str) -> bool:
    return "://" in path


def manifest_location(manifest: str | os.PathLike[str]) -> str:
    """The manifest as an absolute local path or a URI (for messages and the job key)."""
    text = os.fspath(manifest)
    if is_uri(text) and not text.startswith("file://"):
        return text
    local = _file_uri_to_path(text) if text.startswith("file://") else text
    return str(Path(local).expanduser().absolute())


def manifest_base(location: str) -> str:
    """The folder relative paths in the manifest are resolved against."""
    if is_uri(location):
        return location.rsplit("/", 1)[0]
    return os.path.dirname(location)


def resolution_base(location: str, root: str | None) -> str:
    """What relative paths resolve against: the manifest's folder, or ``--root`` (normalised)
    when that is in another store (a local manifest listing ``faces/1.jpg`` with ``--root
    s3://bucket/images``, or a manifest in another bucket)."""
    if root is not None and store_of(root) != store_of(location):
        return root
    return manifest_base(location)


def manifest_fingerprint(
    manifest: str | os.PathLike[str], storage: StorageOptions | None = None
) -> str:
    """SHA-256 of the manifest file's bytes, read as a stream."""
    filesystem, inner, location = _filesystem(manifest, storage)
    try:
        with filesystem.open_input_stream(inner, compression=None) as fh:
            return sha256_stream(fh)
    except OSError as exc:
        raise _read_error(exc, location, storage) from None


def resolve_path(raw: str | None, base: str) -> str:
    """A manifest path cell made absolute: relative to ``base``, ``file://`` made local, other
    URIs kept. An empty cell stays empty (it becomes a ``bad_path`` error row)."""
    if raw is None or not raw.strip():
        return ""
    if raw.startswith("file://"):
        return os.path.normpath(_file_uri_to_path(raw))
    if is_uri(raw):
        return raw
    if os.path.isabs(raw):
        return os.path.normpath(raw)
    if is_uri(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, raw))}"
    return os.path.normpath(os.path.join(base, raw))


def read_header(
    manifest: str | os.PathLike[str], storage: StorageOptions | None = None
) -> list[str]:
    """The manifest's column names (DataError if it is empty or not readable as a table)."""
    with _open_batches(manifest, columns=None, storage=storage) as (names, _):
        return names


def check_columns(names: Sequence[str], columns: ManifestColumns, source: str) -> ManifestColumns:
    """The columns to use, validated against the manifest's header (label resolved)."""
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise DataError(f"manifest {source} has duplicate column names {dupes}: rename them")
    shown = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")

    def need(col: str, option: str) -> None:
        if col not in names:
            raise DataError(
                f"manifest {source} has no column {col!r} (its columns: {shown}); "
                f"name the right one with {option}"
            )

    if columns.path not in names and len(names) == 1 and any(c in names[0] for c in ";\t|"):
        raise DataError(
            f"manifest {source} has one column {names[0]!r}: a manifest is comma-separated "
            "(fields holding commas quoted); save it as CSV with commas"
        )
    need(columns.path, "--path-column")
    if columns.id is not None:
        need(columns.id, "--id-column")
    label = columns.label
    if label is not None:
        need(label, "--label-column")
    elif DEFAULT_LABEL_COLUMN in names and DEFAULT_LABEL_COLUMN != columns.path:
        label = DEFAULT_LABEL_COLUMN
    for col in columns.keep:
        need(col, "--keep-columns")
        if col in RESERVED_COLUMNS or col.startswith(COLUMN_PREFIX):
            raise UsageError(
                f"--keep-columns {col!r} would clash with the output column of that name "
                f"(reserved: {', '.join(sorted(RESERVED_COLUMNS))}, p_*): rename it in the manifest"
            )
    if len(set(columns.keep)) != len(columns.keep):
        raise UsageError(f"--keep-columns lists a column twice: {list(columns.keep)}")
    return replace(columns, label=label)


def stage_manifest(
    manifest: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    columns: ManifestColumns,
    *,
    skip: np.ndarray | None = None,
    rows_per_part: int = 50_000,
    rows_per_group: int = 1_024,
    storage: StorageOptions | None = None,
    base: str | None = None,
) -> StagedManifest:
    """Stream the manifest into Parquet parts under ``dest``: ``row``, ``id``, ``path``
    (resolved against ``base``, default the manifest's folder), ``true_label`` and the kept
    columns, leaving out the rows in ``skip`` (sorted row numbers already scored). Memory
    stays bounded by one read batch."""
    location = manifest_location(manifest)
    base = base if base is not None else manifest_base(location)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    skip = np.asarray(skip if skip is not None else [], dtype=np.int64)
    files: list[str] = []
    writer: pq.ParquetWriter | None = None
    in_part = 0
    rows = todo = 0
    schema: pa.Schema | None = None
    stores: dict[str, str] = {}
    with _open_batches(manifest, columns=None, storage=storage) as (names, _):
        columns = check_columns(names, columns, location)
    try:
        with _open_batches(manifest, columns=columns.needed(), storage=storage) as (_, batches):
            for batch in batches:
                table = _normalise(batch, columns, base, rows)
                _note_stores(table.column("path"), stores)
                rows += batch.num_rows
                table = _drop_done(table, skip)
                if schema is None:
                    schema = table.schema
                table = table.cast(schema)
                todo += table.num_rows
                start = 0
                while start < table.num_rows:
                    if writer is None:
                        files.append(str(dest / f"part-{len(files):05d}.parquet"))
                        writer = pq.ParquetWriter(files[-1], schema)
                        in_part = 0
                    take = min(rows_per_part - in_part, table.num_rows - start)
                    writer.write_table(table.slice(start, take), row_group_size=rows_per_group)
                    in_part += take
                    start += take
                    if in_part >= rows_per_part:
                        writer.close()
                        writer = None
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        raise DataError(
            f"manifest {location} has no rows: it needs a header with a {columns.path!r} column "
            "and one line per image"
        )
    assert schema is not None
    return StagedManifest(
        rows=rows, todo=todo, columns=columns, schema=schema, files=files, stores=stores
    )


#: Object stores a manifest may name (each is checked before any scoring).
MAX_STORES = 16


def _note_stores(paths: Any, stores: dict[str, str]) -> None:
    """Add each object store (``scheme://bucket``) first seen in ``paths`` with that path."""
    if len(stores) >= MAX_STORES:
        return
    found = pc.extract_regex(paths, r"^(?P<store>[A-Za-z][A-Za-z0-9+.-]*://[^/]*)")
    prefixes = pc.struct_field(found, "store")
    for store in pc.unique(prefixes.drop_null()).to_pylist():
        if store not in stores and len(stores) < MAX_STORES:
            i = pc.index(prefixes, store).as_py()
            stores[store.lower()] = paths[i].as_py()


def _normalise(batch: pa.RecordBatch, columns: ManifestColumns, base: str, first: int) -> pa.Table:
    n = batch.num_rows
    raw = _as_strings(batch.column(columns.path), columns.path)
    raw_list = raw.to_pylist()
    for i, cell in enumerate(raw_list):
        if cell is not None and ("\n" in cell or "\r" in cell):
            # Legal CSV, but in a list of image paths it is a quote left open: the lines
            # after it were swallowed into this cell, and their rows would be lost.
            raise DataError(
                f"manifest row {first + i} has a path cell spanning several lines "
                f'({cell[:60]!r}...): a quote (") left open swallows the lines after it; '
                "close or remove it and rerun"
            )
    arrays: dict[str, Any] = {
        "row": pa.array(np.arange(first, first + n, dtype=np.int64)),
        # The id defaults to the path as the manifest spells it: stable when the manifest moves.
        "id": _as_strings(batch.column(columns.id), columns.id) if columns.id else raw,
        "path": pa.array([resolve_path(p, base) for p in raw_list], pa.string()),
    }
    if columns.label is not None:
        arrays["true_label"] = _as_strings(batch.column(columns.label), columns.label)
    for col in columns.keep:
        arrays[col] = batch.column(col)
    return pa.table(arrays)


def _as_strings(array: pa.Array, name: str) -> pa.Array:
    if pa.types.is_string(array.type):
        return array
    if pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        return array.cast(pa.string())
    try:
        return array.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(
            f"manifest column {name!r} has type {array.type}, which cannot be read as text"
        ) from None


def _drop_done(table: pa.Table, skip: np.ndarray) -> pa.Table:
    if skip.size == 0:
        return table
    rows = table.column("row").to_numpy()
    lo, hi = np.searchsorted(skip, [rows[0], rows[-1] + 1])
    if lo == hi:
        return table
    keep = ~np.isin(rows, skip[lo:hi], assume_unique=True)
    return table.filter(pa.array(keep))


class _open_batches:
    """Context manager: ``(column names, iterator of record batches)`` of a manifest."""

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        columns: list[str] | None,
        storage: StorageOptions | None = None,
    ):
        self.manifest = manifest
        self.columns = columns
        self.storage = storage
        self._stream: Any = None

    def __enter__(self) -> tuple[list[str], Iterator[pa.RecordBatch]]:
        filesystem, inner, location = _filesystem(self.manifest, self.storage)
        self.location = location
        parquet = location.lower().endswith(PARQUET_SUFFIXES)
        try:
            if parquet:
                self._stream = filesystem.open_input_file(inner)
                return self._parquet(location)
            self._stream = filesystem.open_input_stream(inner, compression="detect")
            return self._csv(location)
        except OSError as exc:
            raise _read_error(exc, location, self.storage) from None

    def __exit__(self, *exc: Any) -> None:
        if self._stream is not None:
            self._stream.close()

    def _csv(self, location: str) -> tuple[list[str], Iterator[pa.RecordBatch]]:
        from pyarrow import csv

        try:
            if self.columns is None:
                reader = csv.open_csv(self._stream)
                return list(reader.schema.names), iter(())
            types = {c: pa.string() for c in self.columns}
            convert = csv.ConvertOptions(
                column_types=types, include_columns=self.columns, strings_can_be_null=False
            )
            reader = csv.open_csv(self._stream, convert_options=convert)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            # UnicodeDecodeError: a header that is not UTF-8 (UTF-16 from a spreadsheet)
            raise _csv_error(exc, location, 0) from None
        return list(reader.schema.names), _checked_csv(reader, location)

    def _parquet(self, location: str) -> tuple[list[str], Iterator[pa.RecordBatch]]:
        try:
            pf = pq.ParquetFile(self._stream)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"manifest {location} is not a readable Parquet file: {exc}") from None
        names = list(pf.schema_arrow.names)
        if self.columns is None:
            return names, iter(())
        return names, pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=self.columns)


def _checked_csv(reader: Any, location: str) -> Iterator[pa.RecordBatch]:
    done = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise _csv_error(exc, location, done) from None
        done += batch.num_rows
        yield batch


def _csv_error(exc: Exception, location: str, done: int) -> DataError:
    text = " ".join(str(exc).split())
    if "Empty CSV file" in text:
        return DataError(
            f"manifest {location} is empty: it needs a header line with a path column and "
            "one line per image"
        )
    if isinstance(exc, UnicodeDecodeError):
        return DataError(
            f"manifest {location} cannot be read as UTF-8 CSV: its header is not UTF-8 "
            f"({text}); save it as UTF-8 (not UTF-16 or a legacy code page) and rerun"
        )
    where = f" after data row {done}" if done else ""
    return DataError(
        f"manifest {location} cannot be read as UTF-8 CSV{where}: {text}; fix that line "
        "(quote fields holding commas) and rerun"
    )


def _filesystem(
    manifest: str | os.PathLike[str], storage: StorageOptions | None = None
) -> tuple[Any, str, str]:
    from pyarrow import fs as pafs

    location = manifest_location(manifest)
    if is_uri(location):
        try:
            filesystem, inner = filesystem_for(location, storage)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise UsageError(f"cannot open manifest {location}: {exc}") from None
        return filesystem, inner, location
    return pafs.LocalFileSystem(), location, location


def _read_error(exc: OSError, location: str, storage: StorageOptions | None) -> UsageError:
    """One line for a manifest that cannot be read, by cause."""
    if isinstance(exc, FileNotFoundError):
        return UsageError(f"manifest {location} does not exist")
    if isinstance(exc, IsADirectoryError) or "directory" in str(exc):
        return UsageError(f"manifest {location} is a folder, not a CSV or Parquet file")
    kind = storage_failure(exc) if is_uri(location) else None
    if isinstance(exc, PermissionError) or kind == "denied":
        return UsageError(f"manifest {location}: permission denied")
    if kind in ("unreachable", "credentials", "timeout"):
        return UsageError(unusable_store(location, storage, "manifest", exc))
    return UsageError(f"cannot read manifest {location}: {' '.join(str(exc).split())}")


def _file_uri_to_path(uri: str) -> str:
    return unquote(urlparse(uri).path)
