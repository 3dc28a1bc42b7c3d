"""The nightly layout on top of :func:`scoring.run.score_manifest`.

``score_manifest`` writes exactly the folder it is given. A nightly run gives it
``OUT/run_date=YYYY-MM-DD`` (a Hive-style partition: pyarrow, Spark and DuckDB read ``OUT`` as
one dataset with a ``run_date`` column, and skip the hidden staging folders beside each
date)::

    OUT/
        run_date=2026-11-26/      committed: part-*.parquet, _summary.json, _SUCCESS
        run_date=2026-11-27/
        .run_date=2026-11-28.staging/   a run in progress or crashed (hidden)
        .run_date=2026-11-28.lock

Each date is committed by one rename, so a reader sees a date complete or not at all; a rerun
of a committed date is a no-op, a crashed date resumes, ``--incremental`` reuses the ids the
other committed dates scored. ``OUT`` may be an object-store prefix (``s3://bucket/scores``):
the same layout, committed as :mod:`scoring.objectstore` describes.

``--incremental`` scores each id once across the dates: a date leaves out the ids that any
other committed date (earlier or later: a backfill) holds as ok rows, so an id is held by the
first run that committed it. Incremental runs of one local ``OUT`` take turns
(``OUT/.incremental.lock``): two at once could each score an id the other has not committed
yet. An object store has no such lock: the scheduler must not start two incremental dates of
one prefix at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import date
from pathlib import Path
from typing import Any

from models.errors import ErrorRateExceeded, GenderscoreError, UsageError
from scoring.layout import SUCCESS, SUMMARY, RunLayout, lock_or_refuse
from scoring.run import ScoringResult, score_manifest
from scoring.storage import (
    StorageOptions,
    filesystem_for,
    is_uri,
    normalise_uri,
    unusable_store,
)

DATE_PREFIX = "run_date="
INCREMENTAL_LOCK = ".incremental.lock"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_run_date(value: str | date | None) -> date:
    """``YYYY-MM-DD`` (or a ``date``) -> date; None -> today (this machine's local date)."""
    if value is None:
        return date.today()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        if not _DATE_RE.match(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--run-date must be a date YYYY-MM-DD, got {value!r}") from None


def date_folder(out: str | os.PathLike[str], run_date: date) -> Any:
    """``OUT/run_date=YYYY-MM-DD`` (a Path, or a URI string for an object-store ``OUT``)."""
    name = f"{DATE_PREFIX}{run_date.isoformat()}"
    text = os.fspath(out)
    if is_uri(text):
        return f"{normalise_uri(text)}/{name}"
    return Path(text).expanduser().absolute() / name


def committed_dates(
    out: str | os.PathLike[str], storage: StorageOptions | None = None
) -> list[tuple[date, Any]]:
    """The committed date folders (or prefixes) under ``OUT``, oldest first."""
    from pyarrow import fs as pafs

    text = os.fspath(out)
    filesystem, root = filesystem_for(text, storage)
    found = []
    try:
        children = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except NotADirectoryError:
        return []  # a file: the run says so in one line
    for child in children:
        day = child.base_name[len(DATE_PREFIX) :]
        if not (child.base_name.startswith(DATE_PREFIX) and _DATE_RE.match(day)):
            continue
        if filesystem.get_file_info(f"{child.path}/{SUCCESS}").type != pafs.FileType.File:
            continue
        try:
            found.append((date.fromisoformat(day), date_folder(text, date.fromisoformat(day))))
        except ValueError:
            continue
    return sorted(found)


def run_nightly(
    manifest: str | os.PathLike[str],
    *,
    models: Sequence[str | os.PathLike[str]] | None = None,
    ensemble: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str],
    run_date: str | date | None = None,
    incremental: bool = False,
    max_error_rate: float | None = None,
    run_id: str | None = None,
    **options: Any,
) -> ScoringResult:
    """Score ``manifest`` into ``OUT/run_date=YYYY-MM-DD`` (default today).

    ``options`` are :func:`scoring.run.score_manifest`'s. ``incremental``: ids that another
    committed date (earlier or later) scored ok with the same ensemble version (or models) are
    left out (needs ``id_column``; see the module docstring). ``max_error_rate``: after the
    commit, raise :class:`ErrorRateExceeded` (its ``result`` attribute holds the result) when
    the date's share of error rows is above it.
    """
    day = parse_run_date(run_date)
    check_max_error_rate(max_error_rate)
    text = os.fspath(out)
    storage = StorageOptions.parse(options.get("storage_options"))
    root = normalise_uri(text) if is_uri(text) else Path(text).expanduser().absolute()
    _refuse_committed_root(root, storage)
    # without an id column score_manifest refuses --incremental before any work
    take_turns = incremental and options.get("id_column") is not None and isinstance(root, Path)
    with incremental_turn(root) if take_turns else nullcontext():
        try:
            others = (
                [p for d, p in committed_dates(root, storage) if d != day] if incremental else None
            )
        except OSError as exc:
            raise UsageError(unusable_store(str(root), storage, "--out", exc)) from None
        result = score_manifest(
            manifest,
            models=models,
            ensemble=ensemble,
            out=date_folder(root, day),
            incremental_from=others,
            extra_summary={"run_date": day.isoformat()},
            run_id=run_id,
            **options,
        )
    if max_error_rate is not None:
        check_error_rate(result, max_error_rate)
    return result


@contextmanager
def incremental_turn(root: Path) -> Iterator[None]:
    """Hold ``ROOT/.incremental.lock`` (hidden from dataset readers) for an incremental run;
    UsageError at once when another one holds it."""
    path = root / INCREMENTAL_LOCK
    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")  # noqa: SIM115 - held for the whole run
    except OSError as exc:
        raise UsageError(
            f"cannot write {path}: {exc.strerror}; choose an --out you can write to"
        ) from None
    with fh:
        lock_or_refuse(
            fh,
            f"another --incremental run is scoring a date under {root} (it holds {path}): "
            "incremental dates are scored one at a time so that no id is scored twice; wait "
            "for it to finish",
        )
        yield


def _refuse_committed_root(root: Any, storage: StorageOptions) -> None:
    from pyarrow import fs as pafs

    filesystem, path = filesystem_for(str(root), storage)
    try:
        infos = filesystem.get_file_info([f"{path}/{SUCCESS}", f"{path}/{SUMMARY}"])
    except OSError:
        return  # an unreachable store: the run's own checks say so in one line
    if any(i.type == pafs.FileType.File for i in infos):
        raise UsageError(
            f"--out {root} is itself one committed scoring output: a nightly --out is the folder "
            f"that holds the {DATE_PREFIX}YYYY-MM-DD folders; choose another --out"
        )


def expected_run_id(out: str | os.PathLike[str], run_date: str | date | None) -> str | None:
    """The run id a run of this date will log under, read without the lock: the committed
    run's, or the crashed run's it would resume; None for a new run."""
    folder = date_folder(out, parse_run_date(run_date))
    layout = RunLayout(folder)
    if layout.committed:
        try:
            return str(layout.committed_summary().get("run_id"))
        except GenderscoreError:
            return None
    state = layout.load_state()
    return state.run_id if state is not None else None


def check_max_error_rate(value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise UsageError(f"--max-error-rate must be a fraction from 0 to 1, got {value!r}")


def error_rate(summary: dict[str, Any]) -> tuple[float, int, int]:
    """``(rate, error rows, rows in the output)`` of a summary (older summaries included)."""
    by_status = summary.get("rows_by_status") or {}
    rows = sum(by_status.values())
    errors = sum(n for status, n in by_status.items() if status != "ok")
    return (errors / rows if rows else 0.0), errors, rows


def check_error_rate(result: ScoringResult, limit: float) -> None:
    """Raise :class:`ErrorRateExceeded` when the output's error rate is above ``limit``. The
    output stays committed: the rows are all there, the alarm is about the inputs."""
    rate, errors, rows = error_rate(result.summary)
    if rate > limit:
        codes = result.summary.get("errors_by_code") or {}
        top = ", ".join(f"{c} {n}" for c, n in list(codes.items())[:3])
        exc = ErrorRateExceeded(
            f"error rate {rate:.2%} ({errors} of {rows} rows; {top}) is above --max-error-rate "
            f"{limit:g}; the output is committed at {result.out}: see its {SUMMARY}"
        )
        exc.result = result  # type: ignore[attr-defined]
        raise exc
