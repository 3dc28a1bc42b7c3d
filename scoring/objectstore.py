"""Scoring output on object storage (``--out s3://bucket/prefix``), committed without a rename.

Object stores have no rename, so an output cannot appear by moving a folder. Each object is
written whole instead (a PUT or a completed multipart upload appears entirely or not at all;
S3 and GCS read after write consistently), and small objects tell a reader which parts count::

    OUT/                               (OUT = s3://bucket/prefix/run_date=YYYY-MM-DD)
        part-<run id>-<write id>-<task>-<n>.parquet
                                       written while the run goes on; parts of a crashed
                                       attempt, of another job or of a replaced run may lie
                                       here too until a commit deletes them: never read by glob
        _manifest.json                 the committed parts: names and row counts
        _summary.json
        _SUCCESS                       written last: the commit
    .OUT.staging/                      beside OUT, hidden (pyarrow and Spark skip '.' names)
        state.json                     job key, run id, attempts (as in the local layout)
        lock.json                      the writing run's lease, renewed while it runs
        todo/part-*.parquet            the manifest rows still to score
        workers/*.json                 rows each scorer actor scored

**Reading** (:func:`read_committed`): OUT is committed when ``_SUCCESS`` exists; its rows are
exactly the files ``_manifest.json`` lists, every manifest row once; nothing else counts. A
reader that finds a listed file gone (``--force`` replaced the output meanwhile) starts over.

**Committing** (:meth:`ObjectStoreLayout.commit`): check the run's own parts hold every row
once (duplicates removed); if a committed run is being replaced, delete its ``_SUCCESS`` first
(readers then see nothing, never a mix); write ``_summary.json``, ``_manifest.json``, then
``_SUCCESS``; then delete the parts not listed and the staging prefix. A run that dies before
``_SUCCESS`` leaves its parts: the rerun of the same job keeps those named with its run id and
scores only the rows missing from them.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.errors import DataError, GenderscoreError, UsageError
from scoring.layout import (
    MANIFEST,
    STATE_VERSION,
    SUCCESS,
    SUMMARY,
    PartsCheck,
    RunLayout,
    RunState,
    commit_listing,
    listed_rows,
)
from scoring.storage import (
    StorageOptions,
    filesystem_for,
    is_uri,
    normalise_uri,
    split_uri,
    unusable_store,
)

log = logging.getLogger("scoring")

#: A lease not renewed for this long belongs to a run that died (another host's run; on this
#: host a dead process's lease is stale at once).
LEASE_S = 120.0
LEASE_RENEW_S = 30.0
#: The tokens of the leases this process holds right now.
_HELD: set[str] = set()


def open_layout(out: str | os.PathLike[str], storage: StorageOptions | None = None) -> Any:
    """The layout of ``--out``: :class:`RunLayout` for a folder, :class:`ObjectStoreLayout`
    for an object-store URI."""
    text = os.fspath(out)
    return ObjectStoreLayout(text, storage) if is_uri(text) else RunLayout(text)


@dataclass(frozen=True)
class CommittedOutput:
    """A committed scoring output, as its reader's protocol defines it."""

    location: str
    filesystem: Any
    path: str  # of OUT inside ``filesystem``
    files: list[str]  # the listed parts, inside ``filesystem``
    summary: dict[str, Any]

    def uris(self) -> list[str]:
        """The listed parts as the user would name them (local paths or URIs)."""
        if not is_uri(self.location):
            return self.files
        scheme = split_uri(self.location)[0]
        return [f"{scheme}://{f}" for f in self.files]


def read_committed(
    location: str | os.PathLike[str], storage: StorageOptions | None = None
) -> CommittedOutput | None:
    """The committed output at ``location`` (a folder or URI), or None when it has no
    ``_SUCCESS``. Outputs committed before ``_manifest.json`` existed (local ones, which
    appear by rename and so hold nothing else) are read by their ``part-*.parquet`` names."""
    text = os.fspath(location)
    location = normalise_uri(text) if is_uri(text) else str(Path(text).expanduser().absolute())
    filesystem, path = filesystem_for(location, storage)
    if not _is_file(filesystem, f"{path}/{SUCCESS}"):
        return None
    summary = _read_json(filesystem, f"{path}/{SUMMARY}", location)
    listing = _read_json(filesystem, f"{path}/{MANIFEST}", location, missing_ok=True)
    if listing is None:
        files = sorted(i.path for i in _children(filesystem, path) if _is_part(i.base_name))
    else:
        try:
            files = [f"{path}/{entry['name']}" for entry in listing["files"]]
        except (KeyError, TypeError):
            raise DataError(f"{location}/{MANIFEST} is not a scoring output listing") from None
    return CommittedOutput(location, filesystem, path, files, summary or {})


class ObjectStoreLayout:
    """The objects of one output on object storage (see the module docstring); the same
    methods as :class:`scoring.layout.RunLayout`, which :func:`scoring.run.score_manifest`
    calls."""

    def __init__(self, out: str, storage: StorageOptions | None = None):
        self.final = normalise_uri(out)
        scheme, bucket, key = split_uri(self.final)
        if not key:
            raise UsageError(
                f"--out {out}: name a prefix inside the bucket, e.g. --out {scheme}://{bucket}/scores"
            )
        self.storage = storage or StorageOptions()
        self.scheme = scheme
        self.filesystem, self.path = filesystem_for(self.final, self.storage)
        parent, name = posixpath.split(self.path)
        self.staging_path = f"{parent}/.{name}.staging"
        self.staging = f"{scheme}://{self.staging_path}"
        self.tally = f"{self.staging_path}/workers"
        self.parts = self.path
        self.todo = Path(tempfile.gettempdir()) / f"genderscore-todo-{os.getpid()}-{id(self):x}"
        self.state_: RunState | None = None
        self._lease: dict[str, Any] | None = None
        self._stop_renewing = threading.Event()

    # the committed output

    @property
    def committed(self) -> bool:
        return _is_file(self.filesystem, f"{self.path}/{SUCCESS}")

    def committed_summary(self) -> dict[str, Any]:
        try:
            return _read_json(self.filesystem, f"{self.path}/{SUMMARY}", self.final) or {}
        except DataError as exc:
            raise GenderscoreError(f"{self.final} is marked committed but {exc}") from None

    def committed_files(self) -> list[str]:
        committed = read_committed(self.final, self.storage)
        return committed.uris() if committed is not None else []

    def same_as(self, location: str | os.PathLike[str]) -> bool:
        text = os.fspath(location)
        return is_uri(text) and normalise_uri(text) == self.final

    def check_out_free(self) -> None:
        """UsageError when OUT cannot be reached or holds objects no scoring run wrote."""
        try:
            children = _children(self.filesystem, self.path)
        except OSError as exc:
            raise UsageError(unusable_store(self.final, self.storage, "--out", exc)) from None
        foreign = [
            c.base_name
            for c in children
            if not (_is_part(c.base_name) or c.base_name in (MANIFEST, SUMMARY, SUCCESS))
        ]
        if foreign and not self.committed:
            raise UsageError(
                f"--out {self.final} already holds objects that are not a scoring output "
                f"({', '.join(sorted(foreign)[:3])}): choose a new or empty prefix"
            )

    # the run in progress

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lease in ``lock.json`` for the run (best effort: an object store has no
        lock; this refuses a second run while the first renews its lease)."""
        self._acquire()
        self.todo.mkdir(parents=True, exist_ok=True)
        try:
            yield
        finally:
            shutil.rmtree(self.todo, ignore_errors=True)
            self._release()

    def load_state(self) -> RunState | None:
        try:
            data = _read_json(self.filesystem, f"{self.staging_path}/state.json", self.staging)
            if not data or data.get("version") != STATE_VERSION:
                return None
            return RunState(**data)
        except (DataError, TypeError):
            return None

    def save_state(self, state: RunState) -> None:
        _write(self.filesystem, f"{self.staging_path}/state.json", json.dumps(asdict(state)))
        self.state_ = state

    def reset(self) -> None:
        """Forget staged work: the staging objects (parts under OUT without this run's id are
        left for the commit to delete: a committed output being replaced still needs them)."""
        for child in _children(self.filesystem, self.staging_path):
            if child.base_name != "lock.json":
                _delete(self.filesystem, child)

    def clear_todo(self) -> None:
        shutil.rmtree(self.todo, ignore_errors=True)
        self.todo.mkdir(parents=True)

    def todo_files(self) -> list[Path]:
        return sorted(self.todo.glob("*.parquet")) if self.todo.is_dir() else []

    @property
    def part_prefix(self) -> str:
        """Parts are named with the run id, so that a rerun tells its own from others'."""
        if self.state_ is None:
            raise GenderscoreError("internal: the run's state is not saved yet")
        return f"part-{self.state_.run_id}"

    def part_files(self) -> list[str]:
        prefix = self.part_prefix + "-"
        return sorted(
            c.path
            for c in _children(self.filesystem, self.path)
            if _is_part(c.base_name) and c.base_name.startswith(prefix)
        )

    def done_rows(self) -> np.ndarray:
        """Sorted unique rows in this run's readable parts (an unreadable one is deleted)."""
        rows = []
        for f in self.part_files():
            try:
                table = pq.read_table(f, columns=["row"], filesystem=self.filesystem)
                rows.append(table.column("row").to_numpy())
            except pa.ArrowInvalid:
                self.filesystem.delete_file(f)
        if not rows:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(rows).astype(np.int64))

    def todo_source(self) -> tuple[str, Any]:
        """Upload the staged rows for the workers (any node may read them)."""
        todo = f"{self.staging_path}/todo"
        for child in _children(self.filesystem, todo):
            _delete(self.filesystem, child)
        for f in self.todo_files():
            with (
                open(f, "rb") as src,
                self.filesystem.open_output_stream(f"{todo}/{f.name}", compression=None) as dst,
            ):
                shutil.copyfileobj(src, dst, 8 << 20)
        return todo, self.filesystem

    def parts_target(self) -> tuple[str, Any]:
        return self.path, self.filesystem

    def commit(
        self, summary: dict[str, Any], *, replace: bool = False, parts: PartsCheck | None = None
    ) -> None:
        """The commit of the module docstring."""
        files = parts.files if parts is not None else self.part_files()
        rows = parts.file_rows if parts is not None else listed_rows(files, self.filesystem)
        listing = commit_listing(summary.get("run_id"), files, rows)
        success = f"{self.path}/{SUCCESS}"
        if _is_file(self.filesystem, success):
            if not replace:
                raise GenderscoreError(f"{self.final} was committed by another run meanwhile")
            self.filesystem.delete_file(success)  # from here on readers see nothing
        text = json.dumps(summary, indent=2, default=str) + "\n"
        _write(self.filesystem, f"{self.path}/{SUMMARY}", text)
        _write(self.filesystem, f"{self.path}/{MANIFEST}", json.dumps(listing, indent=2) + "\n")
        _write(self.filesystem, success, "")
        self._clean_up({posixpath.basename(f) for f in files})

    def _clean_up(self, listed: set[str]) -> None:
        """After the commit: parts nobody lists and the staging objects go (best effort)."""
        try:
            for child in _children(self.filesystem, self.path):
                if _is_part(child.base_name) and child.base_name not in listed:
                    _delete(self.filesystem, child)
            for child in _children(self.filesystem, self.staging_path):
                if child.base_name != "lock.json":
                    _delete(self.filesystem, child)
        except OSError as exc:
            log.warning("committed %s; cleaning up left objects failed: %s", self.final, exc)

    # the lease

    def _acquire(self) -> None:
        path = f"{self.staging_path}/lock.json"
        try:
            held = _read_json(self.filesystem, path, self.staging, missing_ok=True)
        except DataError:
            held = None  # a torn lease is no lease
        except OSError as exc:
            raise UsageError(unusable_store(self.final, self.storage, "--out", exc)) from None
        now = time.time()
        if held and not _stale(held, now):
            raise UsageError(
                f"another run is writing {self.final} (host {held.get('host')}, pid "
                f"{held.get('pid')}, lease renewed {now - held.get('renewed_at', now):.0f} s ago): "
                f"wait for it to finish; a lease left by a run that died expires {LEASE_S:g} s "
                "after its last renewal"
            )
        lease = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
        try:
            _write(self.filesystem, path, json.dumps({**lease, "renewed_at": now}))
        except OSError as exc:
            raise UsageError(unusable_store(self.final, self.storage, "--out", exc)) from None
        self._lease = lease
        _HELD.add(lease["token"])
        self._stop_renewing.clear()
        threading.Thread(target=self._renew, args=(path,), daemon=True, name="lease").start()

    def _renew(self, path: str) -> None:
        while not self._stop_renewing.wait(LEASE_RENEW_S):
            try:
                _write(
                    self.filesystem, path, json.dumps({**self._lease, "renewed_at": time.time()})
                )
            except (OSError, TypeError):
                continue  # the store is away for a moment: the next renewal may work

    def _release(self) -> None:
        self._stop_renewing.set()
        if self._lease is None:
            return
        _HELD.discard(self._lease["token"])
        self._lease = None
        try:
            self.filesystem.delete_file(f"{self.staging_path}/lock.json")
            if not _children(self.filesystem, self.staging_path):
                self.filesystem.delete_dir(self.staging_path)
        except OSError:
            pass  # a stale lease of this process is recognised as such by the next run


def _stale(lease: dict[str, Any], now: float) -> bool:
    if now - float(lease.get("renewed_at") or 0) > LEASE_S:
        return True
    if lease.get("host") != socket.gethostname():
        return False
    pid = lease.get("pid")
    if pid == os.getpid():
        return lease.get("token") not in _HELD
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return True
    except PermissionError:
        return False
    return False


def _is_part(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


def _children(filesystem: Any, path: str) -> list[Any]:
    from pyarrow import fs as pafs

    return filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))


def _is_file(filesystem: Any, path: str) -> bool:
    from pyarrow import fs as pafs

    return filesystem.get_file_info(path).type == pafs.FileType.File


def _delete(filesystem: Any, info: Any) -> None:
    from pyarrow import fs as pafs

    if info.type == pafs.FileType.Directory:
        filesystem.delete_dir(info.path)
    else:
        filesystem.delete_file(info.path)


def _read_json(
    filesystem: Any, path: str, where: str, *, missing_ok: bool = False
) -> dict[str, Any] | None:
    try:
        with filesystem.open_input_stream(path, compression=None) as fh:
            data = fh.read()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise DataError(f"{where}: {posixpath.basename(path)} is missing") from None
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: {posixpath.basename(path)} is unreadable: {exc}") from None


def _write(filesystem: Any, path: str, text: str) -> None:
    with filesystem.open_output_stream(path, compression=None) as fh:
        fh.write(text.encode("utf-8"))
