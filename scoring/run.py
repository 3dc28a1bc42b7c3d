"""``score_manifest``: a manifest of image paths -> Parquet with one row per manifest row.

Three phases (see :mod:`scoring.layout` for the folders):

1. prepare, on the driver, streaming: check options, models and the manifest as a whole
   (any problem is one UsageError/DataError before any scoring), fingerprint the manifest,
   and stage the rows still to score as Parquet parts;
2. score, on Ray Data: read the staged parts -> decode in tasks -> ONNX Runtime in an actor
   pool -> write Parquet parts;
3. commit: check every manifest row is in the parts exactly once, write ``_summary.json``
   and ``_SUCCESS``, rename the parts folder to OUT.

A run that dies between 1 and 3 is resumed by running the same command again.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.errors import DataError, GenderscoreError, UsageError
from models.versions import package_versions
from scoring.decode import normalise_root, unique_requests
from scoring.incremental import (
    PriorScores,
    check_replace,
    drop_prior_rows,
    load_prior,
    same_committed_job,
)
from scoring.internal import logs, signals
from scoring.internal.cluster import (
    TASK_CPUS,
    WorkerPlan,
    cluster_cpus,
    join_dataset_threads,
    largest_node_cpus,
    plan_workers,
    ray_session,
)
from scoring.internal.hashing import sha256_json
from scoring.internal.tally import TalliedScorer, read_tally
from scoring.internal.watchdog import StallWatchdog
from scoring.layout import RunLayout, RunState, new_run_id, utc_now, verify_parts
from scoring.manifest import (
    ManifestColumns,
    StagedManifest,
    check_columns,
    manifest_fingerprint,
    manifest_location,
    read_header,
    resolution_base,
    stage_manifest,
)
from scoring.modelset import ModelRef, load_models, read_model_bytes
from scoring.objectstore import open_layout
from scoring.onnx_scorer import output_schema
from scoring.options import ScoringOptions, check_options
from scoring.storage import check_stores
from scoring.summary import collect_stats

log = logging.getLogger("scoring")
#: Batches in a block of staged rows: each block is one task of a scorer actor.
BATCHES_PER_BLOCK = 4


@dataclass(frozen=True)
class ScoringResult:
    """What a scoring run produced (docs/contracts.md, "the scoring result")."""

    out: Path | str  # a URI for an object-store output
    parquet_files: list[str]
    summary: dict[str, Any]
    #: True when OUT already held this job's committed output and nothing was scored.
    skipped: bool = False


@signals.stops_cleanly
def score_manifest(
    manifest: str | os.PathLike[str],
    *,
    models: Sequence[str | os.PathLike[str]] | None = None,
    ensemble: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str],
    incremental_from: Sequence[str | os.PathLike[str]] | None = None,
    extra_summary: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    **options: Any,
) -> ScoringResult:
    """Score every row of ``manifest`` with ``models`` (or the models of ``ensemble``) into
    Parquet parts under ``out``.

    ``options`` are the fields of :class:`scoring.options.ScoringOptions`: ``path_column``,
    ``id_column``, ``label_column``, ``keep_columns``, ``root``, ``batch_size``,
    ``num_workers``, ``worker_threads``, ``ray_address``, ``force``, ``progress``,
    ``stall_timeout``, ``storage_options``, ``read_timeout``, ``read_concurrency``.
    ``manifest``, image paths and ``out`` may be object-store URIs (:mod:`scoring.storage`,
    :mod:`scoring.objectstore`).
    Running it again on a committed ``out`` for the same job does nothing; after a crash it
    resumes. Raises UsageError/DataError for bad input, GenderscoreError if the run fails,
    RunStopped after a clean stop on SIGTERM or SIGINT (main thread only; see
    :mod:`scoring.internal.signals`).

    ``incremental_from``: other committed outputs (oldest first); manifest rows whose id
    (``id_column`` is then required) one of them scored ok with the same ensemble version or
    models are not scored again, and the summary's ``incremental`` says where they are (see
    :mod:`scoring.incremental`). ``extra_summary``: more keys for ``_summary.json`` and the
    Parquet metadata (the nightly layer adds ``run_date``). ``run_id``: the id a new run
    gets (default: a fresh one); a resumed run keeps the id of its first attempt.
    """
    started = time.perf_counter()
    known = {f.name for f in fields(ScoringOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"unknown scoring option(s) {unknown}; known: {sorted(known)}")
    opts = check_options(
        models=models, ensemble=ensemble, out=out, options=ScoringOptions(**options)
    )
    layout = open_layout(out, opts.storage)
    if incremental_from is not None and opts.id_column is None:
        raise UsageError(
            "--incremental needs --id-column: the manifest column whose ids say which images "
            "earlier runs already scored (paths are not stable ids)"
        )
    spec, refs = _resolve_models(models, ensemble)
    if opts.faces is not None:
        refs = [dataclasses.replace(r, framing=r.framing.with_mode(opts.faces)) for r in refs]
    prior = None
    if incremental_from is not None:
        assert opts.id_column is not None
        prior = load_prior(
            [p for p in incremental_from if not layout.same_as(p)],
            id_column=opts.id_column,
            models=[(r.name, r.sha256) for r in refs],
            ensemble_version=spec.version if spec is not None else None,
            storage=opts.storage,
        )
    job = _Job.describe(manifest, opts, refs, spec, prior)
    layout.check_out_free()
    extra = dict(extra_summary or {})
    try:
        with layout.locked():
            return _score_locked(
                layout, manifest, opts, refs, spec, job, ensemble, started, prior, extra, run_id
            )
    except PermissionError as exc:
        raise UsageError(
            f"cannot write beside --out {layout.final}: {exc.strerror} ({exc.filename}); "
            "choose a folder you can write to"
        ) from None
    except OSError as exc:
        raise GenderscoreError(
            f"writing {layout.final} failed: {exc}; nothing was committed: fix the cause (disk "
            "space, the folder) and rerun the same command to resume"
        ) from None


def _score_locked(
    layout: RunLayout,
    manifest: str | os.PathLike[str],
    opts: ScoringOptions,
    refs: list[ModelRef],
    spec: Any,
    job: _Job,
    ensemble: str | os.PathLike[str] | None,
    started: float,
    prior: PriorScores | None,
    extra: dict[str, Any],
    run_id: str | None,
) -> ScoringResult:
    """Everything done while holding the output's lock: skip, resume or start, score, commit."""
    done = _already_committed(layout, job, opts, prior)
    if done is not None:
        return done
    state = _start_attempt(layout, job.key, run_id)
    logs.set_run_id(state.run_id)
    log.info(
        "run %s (attempt %d): %s -> %s", state.run_id, state.attempts, job.location, layout.final
    )
    staged = _stage(layout, manifest, job, opts, state)
    skipped, incremental = np.zeros(0, np.int64), None
    if prior is not None:
        staged, skipped, incremental = _skip_prior(layout, staged, prior, job)
    in_output = staged.rows - int(skipped.size)
    signals.report_progress(lambda: (_rows_in_parts(layout), in_output))
    meta = {
        "run_id": state.run_id,
        "created_at": state.created_at,
        "models": [r.to_dict() for r in refs],
        "ensemble_version": spec.version if spec is not None else None,
        **extra,
    }
    schema = output_schema(staged.schema, refs, ensemble=spec is not None, metadata=meta)
    where, plan, pipeline_s = None, None, 0.0
    if staged.todo:
        where, plan, pipeline_s = _score_todo(_Pipeline(layout, refs, spec, schema, opts, job.root))
    check = verify_parts(
        layout.part_files(), staged.rows, skipped=skipped, filesystem=layout.filesystem
    )
    stats = collect_stats(check.files, filesystem=layout.filesystem)
    wall = time.perf_counter() - started
    errors = sum(n for status, n in stats["rows_by_status"].items() if status != "ok")
    summary = {
        **meta,
        "committed_at": utc_now(),
        "output": str(layout.final),
        "manifest": job.location,
        "manifest_sha256": job.fingerprint,
        "job_key": job.key,
        "job_base_key": job.base_key,
        "rows": staged.rows,
        "rows_in_output": in_output,
        **stats,
        "error_rate": round(errors / in_output, 6) if in_output else 0.0,
        "rows_scored": staged.todo,
        "rows_resumed": in_output - staged.todo,
        "rows_skipped": int(skipped.size),
        "incremental": incremental,
        "duplicates_removed": check.duplicates_removed,
        "attempts": state.attempts,
        "wall_time_s": round(wall, 3),
        "pipeline_time_s": round(pipeline_s, 3),
        "images_per_s": round(staged.todo / wall, 2) if wall > 0 else None,
        "ensemble": str(Path(ensemble).absolute()) if ensemble is not None else None,
        "threshold": spec.threshold if spec is not None else None,
        "columns": {**job.columns.to_dict(), "root": job.root},
        "ray": _ray_record(where, plan, opts, layout),
        "parquet_files": [Path(f).name for f in check.files],
        "versions": package_versions(SCORING_PACKAGES),
    }
    with signals.deferred("the output was being committed"):
        layout.commit(summary, replace=opts.force, parts=check)
    return ScoringResult(layout.final, layout.committed_files(), summary)


@dataclass(frozen=True)
class _Pipeline:
    """What the Ray pipeline of one run reads, scores with and writes to."""

    layout: RunLayout
    refs: list[ModelRef]
    spec: Any
    schema: Any
    opts: ScoringOptions
    root: str | None


def _score_todo(job: _Pipeline) -> tuple[str, WorkerPlan, float]:
    """Score the staged todo on Ray: where, with which plan, and the pipeline's seconds."""
    opts = job.opts
    with ray_session(opts.ray_address) as where:
        plan = plan_workers(
            cluster_cpus(), opts.num_workers, opts.worker_threads, largest_node_cpus()
        )
        t0 = time.perf_counter()
        _run_pipeline(job, plan)
        return where, plan, time.perf_counter() - t0


def _already_committed(
    layout: RunLayout, job: _Job, opts: ScoringOptions, prior: PriorScores | None
) -> ScoringResult | None:
    """The committed output when it is this job's (nothing to do); None when the run goes
    ahead; a UsageError when another job's output is there and --force does not replace it."""
    if not layout.committed:
        return None
    summary = layout.committed_summary()
    if same_committed_job(summary, job.key, job.base_key) and not opts.force:
        logs.set_run_id(summary.get("run_id"))
        log.info(
            "%s already holds this run's committed output (run %s): nothing to do; "
            "--force scores again",
            layout.final,
            summary.get("run_id"),
        )
        return ScoringResult(layout.final, layout.committed_files(), summary, True)
    if not opts.force:
        raise UsageError(
            f"--out {layout.final} holds a committed run of another manifest, models "
            "or options: pass --force to replace it, or choose another --out"
        )
    check_replace(summary, job.base_key, prior, str(layout.final))
    return None


def _skip_prior(
    layout: RunLayout, staged: Any, prior: PriorScores, job: _Job
) -> tuple[Any, np.ndarray, dict[str, Any]]:
    """Drop from the todo the ids earlier dates scored (``--incremental``): the staged run
    without them, their row numbers, and the summary's ``incremental`` record."""
    skipped, counts, left = drop_prior_rows(layout.todo_files(), prior)
    incremental = {
        "id_column": job.columns.id,
        "rows_skipped": int(skipped.size),
        # where the skipped rows are: every earlier output that matched, and how many of this
        # manifest's rows each holds
        "sources": [
            {"output": src.output, "run_id": src.run_id, "rows": int(n)}
            for src, n in zip(prior.sources, counts, strict=True)
        ],
    }
    log.info(
        "incremental: %d of %d rows already scored by earlier runs (%s)",
        skipped.size,
        staged.rows,
        ", ".join(f"{Path(s['output']).name}: {s['rows']}" for s in incremental["sources"])
        or "no matching earlier output",
    )
    return dataclasses.replace(staged, todo=left), skipped, incremental


def _ray_record(
    where: str | None, plan: WorkerPlan | None, opts: ScoringOptions, layout: RunLayout
) -> dict[str, Any]:
    """The summary's ``ray`` record: where the run scored and with how many actors."""
    return {
        "address": where,
        "workers": plan.workers if plan else None,
        "worker_threads": plan.threads if plan else None,
        "actor_cpus": plan.actor_cpus if plan else None,
        "cluster_cpus": plan.cluster_cpus if plan else None,
        "batch_size": opts.batch_size,
        # rows each node's scorer actors scored, over every attempt (work redone after a lost
        # worker counts twice)
        "nodes": read_tally(layout.tally, layout.filesystem) if plan else {},
    }


@dataclass(frozen=True)
class _Job:
    """What makes two runs the same job (so one may resume or skip the other)."""

    location: str
    columns: ManifestColumns
    fingerprint: str
    root: str | None
    base: str  # what relative manifest paths resolve against
    key: str
    #: the key without the other outputs an incremental job drew on (see same_committed_job)
    base_key: str

    @classmethod
    def describe(
        cls,
        manifest: str | os.PathLike[str],
        opts: ScoringOptions,
        refs: list[ModelRef],
        spec: Any,
        prior: PriorScores | None = None,
    ) -> _Job:
        location = manifest_location(manifest)
        columns = check_columns(read_header(manifest, opts.storage), opts.columns, location)
        fingerprint = manifest_fingerprint(manifest, opts.storage)
        root = normalise_root(opts.root)
        base = resolution_base(location, root)
        described = {
            "manifest_sha256": fingerprint,
            # relative paths resolve against the manifest's folder: moved, it is another job
            "manifest_base": base,
            "columns": [columns.path, columns.id, columns.label, list(columns.keep)],
            "root": root,
            "models": [(r.name, r.sha256) for r in refs],
            "ensemble_version": spec.version if spec is not None else None,
        }
        if any(r.framing.aligned for r in refs):
            # framing changes the pixels, so the scores (models framed off keep old job keys)
            described["framing"] = [r.framing.to_dict() for r in refs]
        base_key = sha256_json(
            {**described, "incremental": True} if prior is not None else described
        )
        if prior is not None:
            # the rows left out depend on which other outputs held them
            described["incremental_from"] = prior.key
        return cls(location, columns, fingerprint, root, base, sha256_json(described), base_key)


def _start_attempt(layout: RunLayout, job_key: str, run_id: str | None = None) -> RunState:
    """The staging folder's state for this job: resumed if it is this job's, else new."""
    state = layout.load_state()
    if state is None or state.job_key != job_key:
        if state is not None:
            log.warning("discarding %s: it belongs to another job", layout.staging)
        layout.reset()
        state = RunState(job_key=job_key, run_id=run_id or new_run_id(), created_at=utc_now())
    state.attempts += 1
    layout.save_state(state)
    return state


def _stage(
    layout: RunLayout,
    manifest: str | os.PathLike[str],
    job: _Job,
    opts: ScoringOptions,
    state: RunState,
) -> StagedManifest:
    """Stage the manifest rows not yet in a finished part."""
    done = layout.done_rows()
    if done.size:
        log.info("resuming run %s: %d rows already scored", state.run_id, done.size)
    layout.clear_todo()
    try:
        staged = stage_manifest(
            manifest,
            layout.todo,
            job.columns,
            skip=done,
            rows_per_part=opts.rows_per_part,
            storage=opts.storage,
            base=job.base,
        )
        check_stores(staged.stores, opts.storage)  # an unreachable store: before any scoring
        return staged
    except (DataError, UsageError):
        if not layout.part_files():
            shutil.rmtree(layout.staging, ignore_errors=True)
        raise


def _resolve_models(
    models: Sequence[str | os.PathLike[str]] | None, ensemble: str | os.PathLike[str] | None
) -> tuple[Any, list[ModelRef]]:
    if ensemble is None:
        return None, load_models(list(models or []))
    from scoring.ensemble_spec import EnsembleSpec

    spec = EnsembleSpec.load(ensemble)
    base = Path(ensemble).expanduser().absolute().parent
    # A member's path is as the ensemble file records it; relative ones sit beside the file.
    paths = [Path(m.path) if Path(m.path).is_absolute() else base / m.path for m in spec.models]
    refs = load_models(paths)
    spec.check_models([(r.name, r.sha256) for r in refs])
    return spec, refs


def _run_pipeline(job: _Pipeline, plan: WorkerPlan) -> None:
    """Read the todo, decode, score and write the parts, under the stall watchdog; a failure
    is one GenderscoreError that says how to resume."""
    import ray

    opts = job.opts
    requests = unique_requests([(r.input_size, r.framing) for r in job.refs])
    watchdog = StallWatchdog(
        lambda: _progress(job.layout), opts.stall_timeout, what="rows scored + files written"
    )
    with _data_context(opts, _staged_row_bytes(job.layout.todo_files())):
        try:
            with watchdog:
                _write_scores(job, plan, requests)
        except KeyboardInterrupt:
            if not watchdog.fired_:
                raise  # the user's Ctrl-C
            raise GenderscoreError(
                f"no progress for {opts.stall_timeout:g} s (a lost Ray node or stuck workers?): "
                "the parts written so far are kept; check the cluster (`ray status`) and rerun "
                "the same command to resume; --stall-timeout sets the limit"
            ) from None
        except GenderscoreError:
            raise
        except Exception as exc:
            # A task's own error (e.g. OSError: no space left) is the cause a RayTaskError
            # wraps; its first line alone names only the task.
            cause = getattr(exc, "cause", None) or exc
            what = f"{type(cause).__name__}: {_first_line(cause)}"
            if isinstance(cause, ray.exceptions.UserCodeException):
                what = _map_error(str(exc)) or what
            raise GenderscoreError(
                f"scoring failed: {what}; the parts written so far are kept: fix the cause and "
                "rerun the same command to resume"
            ) from exc
        finally:
            join_dataset_threads()  # before ray.shutdown (see there)


def _write_scores(job: _Pipeline, plan: WorkerPlan, requests: Any) -> None:
    """The Ray Data pipeline itself: todo -> scorer actors (read, decode, score) -> Parquet
    parts."""
    import ray
    from ray.data import ActorPoolStrategy

    layout, opts, schema, spec = job.layout, job.opts, job.schema, job.spec

    # Refs, not bytes, in the actors' arguments: small arguments are inlined, and a restarted
    # actor fetches the models again while the driver holds the refs.
    payload = [(r, ray.put(read_model_bytes(r))) for r in job.refs]
    todo, todo_fs = layout.todo_source()
    ds = ray.data.read_parquet(todo, filesystem=todo_fs, num_cpus=TASK_CPUS)
    # A row crosses Ray as a path and comes back as scores: the actors read and decode their
    # own batches, where decode tasks handed them 150 KB of pixels per row through the object
    # store (measured on 2 cores: 10-15% more img/s, the tasks' CPU down by two thirds). The
    # read cuts the todo into blocks of a few batches (see _data_context).
    if layout.filesystem is None:
        layout.tally.mkdir(parents=True, exist_ok=True)
    ds = ds.map_batches(
        TalliedScorer,
        fn_constructor_kwargs={
            "models": payload,
            "threads": plan.threads,
            "schema": schema,
            "ensemble": spec.content if spec is not None else None,
            "tally_dir": str(layout.tally),
            "tally_fs": layout.filesystem,
            "decode": {"requests": requests, "root": job.root, "reads": opts.reads},
        },
        batch_format="pyarrow",
        batch_size=opts.batch_size,
        compute=ActorPoolStrategy(size=plan.workers),
        num_cpus=plan.actor_cpus,
    )
    parts, parts_fs = layout.parts_target()
    ds.write_parquet(
        parts,
        filesystem=parts_fs,
        try_create_dir=parts_fs is None,  # an object store has no folders to make
        schema=schema,
        filename_provider=_part_names(layout.part_prefix),
        # Scored rows are small; files of this many rows are also the unit a crash loses.
        min_rows_per_file=opts.rows_per_file,
        ray_remote_args={"num_cpus": TASK_CPUS},
    )


def _part_names(prefix: str) -> Any:
    """Part file names ``<prefix>-<write uuid>-<task>``: unique per attempt, so a resumed run
    adds files."""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"{prefix}-{write_uuid}-{task_index:06d}"

    return PartNames()


#: The DataContext settings a run changes, put back when it ends.
_CONTEXT_KEYS = (
    "enable_progress_bars",
    "print_on_execution_start",
    "issue_detectors_config",
    "target_max_block_size",
    "use_datasource_v2",
    "execution_no_progress_timeout_s",
    "retried_io_errors",
    "execution_options",
)


def _staged_row_bytes(files: list[Path]) -> int:
    """Arrow bytes of one staged row (its number, id and path), from the todo's first rows."""
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
            if batch.num_rows:
                return max(1, math.ceil(batch.nbytes / batch.num_rows))
    return 256


@contextmanager
def _data_context(opts: ScoringOptions, row_bytes: int) -> Iterator[None]:
    """Ray Data's settings for a scoring run (``row_bytes``: the size of a staged row),
    restored afterwards."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in _CONTEXT_KEYS}
    ctx.enable_progress_bars = opts.progress
    ctx.print_on_execution_start = opts.progress
    # Each actor holds its sessions' ORT memory (1-2.5 GB for three fp32 224 px models) by
    # design; Ray Data's high-memory warning, repeated every 30 s, would bury the progress.
    detectors = ctx.issue_detectors_config.detectors
    ctx.issue_detectors_config = dataclasses.replace(
        ctx.issue_detectors_config,
        detectors=[d for d in detectors if d.__name__ != "HighMemoryIssueDetector"],
    )
    # Ray Data's V2 Parquet reader lists the staged parts with a pool of 32 footer-reading
    # actors (RAY_DATA_PARQUET_FOOTER_NUM_ACTORS), each a Python process: 2.4 GB and a burst of
    # process starts on 2 cores once a manifest has a few hundred parts (measured at 1M rows).
    # The V1 reader reads the footers of our few local parts in the driver.
    ctx.use_datasource_v2 = False
    # Ray Data's own no-progress guard (30 min by default) watches blocks moving between its
    # queues, not rows scored; the stall watchdog is the one limit (--stall-timeout, 0: none)
    # with one message that says how to resume.
    ctx.execution_no_progress_timeout_s = -1
    # Ray Data retries a failed write on these errors in two nested loops of 10 attempts with
    # backoffs of up to 32 s each: an S3 endpoint that went away held the run for about half an
    # hour (measured: still retrying after 5 min) before it could say so. The S3 client has
    # already retried a connection error 3 times by then, so an unreachable store fails the run
    # at once, as it does for the reads; throttling (SLOW_DOWN, 503) is still retried.
    ctx.retried_io_errors = [e for e in ctx.retried_io_errors if "NETWORK_CONNECTION" not in e]
    # Blocks are paths, cheap to move: an actor on the node that read a block gains nothing,
    # and preferring it sent most batches to the head node's actor (a worker node's scored
    # under a third of 1,200 rows in the 2-node cluster test).
    ctx.execution_options = copy.copy(ctx.execution_options)  # the saved one stays as it was
    with warnings.catch_warnings():
        # Deprecated in Ray 2.60 ("Ray Data manages actor locality internally"), yet it still
        # decides; the warning would reach the user on every run.
        warnings.filterwarnings("ignore", ".*actor_locality_enabled", DeprecationWarning)
        ctx.execution_options.actor_locality_enabled = False
    # Blocks of a few batches of paths. Ray's default (128 MiB) would make a staged part of
    # thousands of paths one block, one actor's long tail. A block per batch is too few rows:
    # a read task hands Ray Data 2 blocks at a time, and on a loaded machine the batches then
    # went unevenly (one node's actor scored a quarter of them). The read cuts them
    # by bytes; `repartition(target_num_rows_per_block=)` would cut by rows but runs as tasks
    # of 1 logical CPU (it takes no num_cpus), which wait for the one CPU the actors leave
    # free and hold back the write tasks.
    ctx.target_max_block_size = BATCHES_PER_BLOCK * opts.batch_size * row_bytes
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(ctx, key, value)


def _progress(layout: RunLayout) -> int:
    """What the stall watchdog watches: rows the scorer actors tallied (they update their file
    after every batch) plus output files written so far."""
    rows = sum(node["rows"] for node in read_tally(layout.tally, layout.filesystem).values())
    return rows + len(layout.part_files())


def _rows_in_parts(layout: RunLayout) -> int:
    """Rows in the finished parts (read-only: a part being written has no footer yet)."""
    rows = 0
    for f in layout.part_files():
        try:
            rows += pq.read_metadata(f, filesystem=layout.filesystem).num_rows
        except (pa.ArrowInvalid, OSError):
            continue
    return rows


def _map_error(text: str) -> str | None:
    """``Class: message`` of the error a map function (decode, scorer) raised: Ray Data wraps
    it in a UserCodeException and keeps it only in the task's traceback text (e.g. the
    decode step's StorageUnreachable when the object store went away)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    found = re.search(
        r"^(?:[\w.]+\.)?(\w+): (.*)\n\nThe above exception was the direct cause", text, re.M
    )
    return f"{found.group(1)}: {found.group(2)}" if found else None


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"  # Ray Data puts its retry notes in args
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()  # no terminal colours
    return text[0] if text else ""


#: The packages a scoring run records in its summary.
SCORING_PACKAGES = ("genderscore", "onnxruntime", "ray", "pyarrow", "numpy", "pillow")
