"""Incremental runs: manifest rows whose id another committed output already scored ok with
the same models are left out, and the summary says which output holds them.

An output (a folder or an object-store prefix, read by the protocol of
:func:`scoring.objectstore.read_committed`: its listed parts only) counts when it is committed
(``_SUCCESS``), took its ids from the same manifest column, and was scored with the same
ensemble version (``--ensemble``) or, without an ensemble, the same models (names and SHA-256,
in order). Only ``ok`` rows count as done: an id that was an error row before is scored again
(the file may be readable now). When several outputs hold an id, the last in the given order is
named as its source.

The nightly layer (:mod:`scoring.nightly`) passes every other committed date, earlier and
later ones alike: an id is scored ok once, by the first run that commits it, whatever the
order in which dates are scored (a backfill of an earlier date leaves out what later dates
hold). A committed date stays the same job when dates are added around it
(:func:`same_committed_job`), and rescoring it with ``--force`` as another job is refused
while other dates left ids out because it held them (:func:`check_replace`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.errors import DataError, UsageError
from scoring.objectstore import read_committed
from scoring.storage import StorageOptions

#: As the staged manifest parts are written (a row group is a unit Ray may read on its own).
ROWS_PER_GROUP = 1_024


@dataclass(frozen=True)
class PriorSource:
    """One earlier committed output that incremental skipping may draw on."""

    output: str
    run_id: str
    ok_rows: int


@dataclass(frozen=True)
class PriorScores:
    """The ids already scored ok by matching earlier outputs, each with its source's index."""

    sources: list[PriorSource]
    ids: pa.Array  # unique
    source_index: np.ndarray  # int32, aligned with ids
    #: output -> the outputs that left ids out because it held them (from their summaries)
    dependents: dict[str, list[str]] = field(default_factory=dict)

    @property
    def key(self) -> list[tuple[str, str]]:
        """What the job key records: a resumed run must see the same earlier outputs."""
        return [(s.output, s.run_id) for s in self.sources]

    def lookup(self, ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """``(done mask, source index of each done id)`` for a column of manifest ids."""
        if len(self.ids) == 0:
            return np.zeros(len(ids), dtype=bool), np.zeros(0, dtype=np.int32)
        pos = pc.index_in(ids, value_set=self.ids)
        done = np.asarray(pos.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        found = pos.drop_null().to_numpy(zero_copy_only=False)
        return done, self.source_index[found]


def matches(summary: dict[str, Any], *, id_column: str, models: list[tuple[str, str]],
            ensemble_version: str | None) -> bool:  # fmt: skip
    """Whether an earlier output's summary makes its ids reusable for this run."""
    cols = summary.get("columns") or {}
    if cols.get("id") != id_column:
        return False
    if summary.get("ensemble_version") != ensemble_version:
        return False
    if ensemble_version is not None:
        return True
    scored = [(m.get("name"), m.get("sha256")) for m in summary.get("models") or []]
    return scored == [tuple(m) for m in models]


def load_prior(
    outputs: Sequence[str | os.PathLike[str]],
    *,
    id_column: str,
    models: list[tuple[str, str]],
    ensemble_version: str | None,
    storage: StorageOptions | None = None,
) -> PriorScores:
    """Read the ok ids of the matching committed ``outputs`` (oldest first)."""
    sources: list[PriorSource] = []
    tables: list[pa.Table] = []
    dependents: dict[str, list[str]] = {}
    for out in outputs:
        try:
            committed = read_committed(out, storage)
        except (OSError, DataError) as exc:
            raise DataError(f"{out}: {exc}: cannot tell what it scored") from None
        if committed is None:
            continue
        summary = committed.summary
        for src in (summary.get("incremental") or {}).get("sources") or []:
            if src.get("rows"):
                dependents.setdefault(str(src.get("output")), []).append(committed.location)
        if not matches(
            summary, id_column=id_column, models=models, ensemble_version=ensemble_version
        ):
            continue
        files = committed.files
        t = (
            pq.read_table(files, columns=["id", "status"], filesystem=committed.filesystem)
            if files
            else None
        )
        ids = (
            t.filter(pc.equal(t.column("status"), "ok")).column("id").combine_chunks()
            if t is not None
            else pa.array([], pa.string())
        )
        ids = ids.drop_null().cast(pa.string())
        index = len(sources)
        sources.append(PriorSource(committed.location, str(summary.get("run_id")), len(ids)))
        tables.append(pa.table({"id": ids, "src": pa.array(np.full(len(ids), index, np.int32))}))
    if not tables:
        return PriorScores([], pa.array([], pa.string()), np.zeros(0, np.int32), dependents)
    # One id in several outputs (older layouts): the last given is where its row is named.
    merged = pa.concat_tables(tables).group_by("id").aggregate([("src", "max")])
    return PriorScores(
        sources,
        merged.column("id").combine_chunks(),
        merged.column("src_max").to_numpy().astype(np.int32),
        dependents,
    )


def same_committed_job(summary: dict[str, Any], key: str, base_key: str) -> bool:
    """Whether a committed output is this job's. An incremental job's key also names the
    outputs it drew on (a resumed run must see the same ones); ``base_key`` leaves them out:
    outputs committed since cannot change what the committed one holds, as an id is scored
    once, by the first run that commits it."""
    return summary.get("job_key") == key or summary.get("job_base_key") == base_key


def check_replace(
    summary: dict[str, Any], base_key: str, prior: PriorScores | None, output: str
) -> None:
    """UsageError when ``--force`` would rescore the committed ``output`` as another job (other
    manifest, models or options) while other outputs left ids out because it held them: ids
    the new manifest lacks would then be in no output."""
    if prior is None or summary.get("job_base_key") == base_key:
        return
    users = prior.dependents.get(output, [])
    if users:
        names = ", ".join(Path(u).name for u in users)
        raise UsageError(
            f"--force with another manifest, models or options on {output} would lose ids: "
            f"{names} left ids out because it held them; rescore it with the manifest and "
            "models it was scored with"
        )


def drop_prior_rows(
    files: Sequence[str | os.PathLike[str]], prior: PriorScores
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rewrite staged manifest parts without the rows ``prior`` holds. Returns the skipped row
    numbers (sorted), the count per source and the rows left to score."""
    skipped: list[np.ndarray] = []
    counts = np.zeros(len(prior.sources), dtype=np.int64)
    left = 0
    for f in files:
        table = pq.read_table(f)
        done, source = prior.lookup(table.column("id").combine_chunks())
        counts += np.bincount(source, minlength=len(prior.sources))
        if done.any():
            skipped.append(table.column("row").to_numpy()[done])
            kept = table.filter(pa.array(~done))
            if kept.num_rows:
                tmp = Path(f).with_suffix(".tmp")
                pq.write_table(kept, tmp, row_group_size=ROWS_PER_GROUP)
                os.replace(tmp, f)
            else:
                Path(f).unlink()
        left += int((~done).sum())
    rows = np.sort(np.concatenate(skipped)) if skipped else np.zeros(0, np.int64)
    return rows.astype(np.int64), counts, left
