"""Where a run's files live, and the steps that make its output appear all at once.

For ``--out OUT`` (``OUT`` may be ``ROOT/run_date=YYYY-MM-DD`` in the nightly layout)::

    OUT/                          the committed output (appears by one rename)
        part-*.parquet            every manifest row exactly once
        _manifest.json            the parts and their rows (as object-store outputs have it)
        _summary.json
        _SUCCESS
    .OUT.staging/                 beside OUT; hidden ('.'-prefixed names are skipped by
        state.json                pyarrow/Spark dataset discovery, so readers never see it)
        todo/part-*.parquet       the staged manifest rows still to score
        parts/part-*.parquet      scored rows written so far (becomes OUT on commit)
        workers/*.json            rows each scorer actor scored, and on which Ray node
    .OUT.lock                     one run per output at a time

A run that dies leaves ``.OUT.staging``. The next run of the same job (same manifest bytes,
options that change rows, model files and ensemble: :attr:`RunState.job_key`) keeps the parts
already written and scores only the rows missing from them; a different job starts over.
An object-store ``--out`` has no rename: :mod:`scoring.objectstore` commits it otherwise.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.errors import GenderscoreError, UsageError

SUCCESS = "_SUCCESS"
SUMMARY = "_summary.json"
#: The committed parts, for readers of any output (the one way to read an object-store one).
MANIFEST = "_manifest.json"
MANIFEST_FORMAT = "genderscore-output/1"
STATE_VERSION = 1


def new_run_id() -> str:
    """Sortable and unique: UTC time plus 8 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def lock_or_refuse(fh: Any, busy: str) -> None:
    """Take an exclusive ``flock`` on the open file ``fh`` at once; UsageError ``busy`` when
    another process holds it (the lock goes with the file's closing or the process's end)."""
    import fcntl

    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise UsageError(busy) from None
        raise


@dataclass
class RunState:
    """What a staging folder belongs to; written before any part."""

    job_key: str
    run_id: str
    created_at: str
    attempts: int = 0
    version: int = STATE_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PartsCheck:
    """The outcome of :func:`verify_parts`."""

    files: list[str]
    rows: int
    duplicates_removed: int
    #: rows in each of ``files``
    file_rows: list[int] = field(default_factory=list)


class RunLayout:
    """The folders of one output (see the module docstring)."""

    #: Parts are local files (an object-store layout names its pyarrow file system here).
    filesystem = None
    part_prefix = "part"

    def __init__(self, out: str | os.PathLike[str]):
        text = os.fspath(out)
        if "://" in text:
            raise UsageError(
                f"--out {text}: write to a local or shared (mounted) folder; committing by "
                "rename needs a file system, not object storage"
            )
        self.final = Path(text).expanduser().absolute()
        if self.final.name in ("", ".", ".."):
            raise UsageError(f"--out {text}: name a folder, e.g. --out scores/")
        self.staging = self.final.parent / f".{self.final.name}.staging"
        self.todo = self.staging / "todo"
        self.parts = self.staging / "parts"
        self.tally = self.staging / "workers"
        self.state_file = self.staging / "state.json"
        self.lock_file = self.final.parent / f".{self.final.name}.lock"

    # the committed output

    @property
    def committed(self) -> bool:
        return (self.final / SUCCESS).is_file()

    def committed_summary(self) -> dict[str, Any]:
        try:
            return json.loads((self.final / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise GenderscoreError(
                f"{self.final} is marked committed but its {SUMMARY} is unreadable: {exc}"
            ) from None

    def committed_files(self) -> list[str]:
        return sorted(str(p) for p in self.final.glob("part-*.parquet"))

    def same_as(self, location: str | os.PathLike[str]) -> bool:
        text = os.fspath(location)
        return "://" not in text and Path(text).expanduser().absolute() == self.final

    def check_out_free(self) -> None:
        """UsageError when OUT holds something that is not a genderscore output."""
        if self.final.exists() and not self.final.is_dir():
            raise UsageError(f"--out {self.final} is a file: name a folder")
        if self.final.is_dir() and not self.committed and any(self.final.iterdir()):
            raise UsageError(
                f"--out {self.final} already holds files that are not a committed scoring "
                "output: choose a new or empty folder"
            )

    # the staging folder

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``.OUT.lock`` for the run (fails at once if another run holds it)."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.lock_file, "a+")  # noqa: SIM115 - held for the whole run
        try:
            lock_or_refuse(
                fh,
                f"another run is writing {self.final} (it holds {self.lock_file}): "
                "wait for it to finish",
            )
            yield
        finally:
            fh.close()

    def load_state(self) -> RunState | None:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                return None
            return RunState(**data)
        except (OSError, json.JSONDecodeError, TypeError):
            return None

    def save_state(self, state: RunState) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def reset(self) -> None:
        """Forget any staged work (another job, or a start from scratch)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.parts.mkdir(parents=True)

    def clear_todo(self) -> None:
        shutil.rmtree(self.todo, ignore_errors=True)

    def todo_files(self) -> list[Path]:
        return sorted(self.todo.glob("*.parquet")) if self.todo.is_dir() else []

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else []

    def todo_source(self) -> tuple[str, Any]:
        """Where the workers read the staged rows: ``(path, file system or None)``."""
        return str(self.todo), None

    def parts_target(self) -> tuple[str, Any]:
        """Where the workers write the parts: ``(path, file system or None)``."""
        return str(self.parts), None

    def done_rows(self) -> np.ndarray:
        """Sorted unique rows already in readable parts. A part a crash left half-written
        (no footer) is deleted, so its rows are scored again."""
        rows = []
        for f in self.part_files():
            try:
                rows.append(pq.read_table(f, columns=["row"]).column("row").to_numpy())
            except (pa.ArrowInvalid, OSError):
                f.unlink(missing_ok=True)
        if not rows:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(rows).astype(np.int64))

    def commit(
        self, summary: dict[str, Any], *, replace: bool = False, parts: PartsCheck | None = None
    ) -> None:
        """Write ``_summary.json``, ``_manifest.json`` (``parts``: the checked parts; default:
        every part) and ``_SUCCESS`` into the parts, then rename them to OUT."""
        text = json.dumps(summary, indent=2, default=str) + "\n"
        files = parts.files if parts is not None else [str(f) for f in self.part_files()]
        rows = parts.file_rows if parts is not None else listed_rows(files)
        listing = commit_listing(summary.get("run_id"), files, rows)
        _write_synced(self.parts / MANIFEST, json.dumps(listing, indent=2) + "\n")
        _write_synced(self.parts / SUMMARY, text)
        _write_synced(self.parts / SUCCESS, "")
        old = None
        if self.final.exists():
            if self.committed and not replace:
                raise GenderscoreError(f"{self.final} was committed by another run meanwhile")
            if self.committed or not any(self.final.iterdir()):
                old = self.final.parent / f".{self.final.name}.replaced-{uuid.uuid4().hex[:8]}"
                os.rename(self.final, old)
        os.rename(self.parts, self.final)
        _fsync_dir(self.final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)


def commit_listing(run_id: Any, files: list[str], rows: list[int]) -> dict[str, Any]:
    """The content of ``_manifest.json``: the committed parts (names relative to OUT)."""
    return {
        "format": MANIFEST_FORMAT,
        "run_id": run_id,
        "rows": int(sum(rows)),
        "files": [
            {"name": os.path.basename(str(f)), "rows": int(n)}
            for f, n in zip(files, rows, strict=True)
        ],
    }


def listed_rows(files: list[str], filesystem: Any = None) -> list[int]:
    """Rows in each Parquet file, from its footer."""
    return [pq.read_metadata(f, filesystem=filesystem).num_rows for f in files]


def verify_parts(
    parts: list[Path] | list[str],
    n_rows: int,
    *,
    skipped: np.ndarray | None = None,
    filesystem: Any = None,
) -> PartsCheck:
    """Check that rows ``0..n_rows-1`` (but ``skipped``: left out by an incremental run)
    appear exactly once across ``parts`` (local files, or paths in the pyarrow
    ``filesystem``); rows written twice (a retried write) are removed from the later file.
    Reads only the ``row`` column."""
    seen = np.zeros(n_rows, dtype=bool)
    expected = np.ones(n_rows, dtype=bool)
    if skipped is not None and skipped.size:
        expected[skipped] = False
    removed = 0
    kept: list[str] = []
    kept_rows: list[int] = []
    for f in parts:
        rows = pq.read_table(f, columns=["row"], filesystem=filesystem).column("row").to_numpy()
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise GenderscoreError(
                f"{f} holds row numbers outside the manifest's 0..{n_rows - 1}: the staging "
                "folder belongs to another manifest; delete it and rerun"
            )
        dup = seen[rows]
        # duplicates inside one file too
        _, first = np.unique(rows, return_index=True)
        within = np.ones(rows.size, dtype=bool)
        within[first] = False
        drop = dup | within
        if drop.any():
            removed += int(drop.sum())
            if drop.all():
                _remove(f, filesystem)
                continue
            _rewrite(f, pq.read_table(f, filesystem=filesystem).filter(pa.array(~drop)), filesystem)
        seen[rows] = True
        kept.append(str(f))
        kept_rows.append(int((~drop).sum()))
    missing = int((expected & ~seen).sum())
    if missing:
        first_missing = int(np.flatnonzero(expected & ~seen)[0])
        raise GenderscoreError(
            f"{missing} of {n_rows} manifest rows have no output (first: row {first_missing}); "
            "rerun the same command to score them"
        )
    return PartsCheck(files=kept, rows=n_rows, duplicates_removed=removed, file_rows=kept_rows)


def _remove(f: Path | str, filesystem: Any) -> None:
    if filesystem is None:
        Path(f).unlink()
    else:
        filesystem.delete_file(str(f))


def _rewrite(f: Path | str, table: pa.Table, filesystem: Any) -> None:
    """Replace a part's content at once: by rename locally; an object store's PUT is whole."""
    if filesystem is not None:
        pq.write_table(table, str(f), filesystem=filesystem)
        return
    tmp = Path(f).with_suffix(".dedup")
    pq.write_table(table, tmp)
    os.replace(tmp, f)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
