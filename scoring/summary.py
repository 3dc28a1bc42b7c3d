"""The run summary: rows by status and error code, error samples, speed, models; written as
``_summary.json`` and printed at the end of ``scoring run``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

ERROR_SAMPLES = 20


def collect_stats(
    files: Sequence[str], *, samples: int = ERROR_SAMPLES, filesystem: Any = None
) -> dict[str, Any]:
    """Counts by status and error code, and the first error rows (by row number), read from
    the parts (in the pyarrow ``filesystem``, default local) a column at a time."""
    by_status: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    by_faces: Counter[str] = Counter()
    errors: list[dict[str, Any]] = []
    for f in files:
        # parts resumed from an attempt made before face framing existed have no faces column
        has_faces = "faces" in pq.read_schema(f, filesystem=filesystem).names
        columns = ["row", "path", "status", "error_code", "error"] + ["faces"] * has_faces
        t = pq.read_table(f, columns=columns, filesystem=filesystem)
        for value, count in _value_counts(t.column("faces")) if has_faces else []:
            if value != "None":
                by_faces[value if int(value) < 2 else "2+"] += count
        for value, count in _value_counts(t.column("status")):
            by_status[value] += count
        bad = t.filter(pc.not_equal(t.column("status"), "ok"))
        for value, count in _value_counts(bad.column("error_code")):
            by_code[value] += count
        if bad.num_rows:
            errors.extend(bad.sort_by("row").slice(0, samples).to_pylist())
            errors = sorted(errors, key=lambda r: r["row"])[:samples]
    return {
        "rows_by_status": dict(sorted(by_status.items())),
        "errors_by_code": dict(by_code.most_common()),
        # rows by faces found: "0", "1", "2+"; empty when no model frames faces
        "rows_by_faces": {k: by_faces[k] for k in ("0", "1", "2+") if by_faces[k]},
        "error_samples": errors,
    }


def _value_counts(column: Any) -> list[tuple[str, int]]:
    counts = pc.value_counts(column)
    return [(str(v["values"]), int(v["counts"])) for v in counts.to_pylist()]


def format_summary(summary: dict[str, Any]) -> list[str]:
    """Human-readable lines for the end of a run."""
    rows = summary["rows"]
    status = summary["rows_by_status"]
    ok, err = status.get("ok", 0), status.get("error", 0)
    lines = [
        f"run {summary['run_id']}: {rows} rows -> {summary['output']}",
        f"  ok {ok}, error {err}"
        + (f" ({_codes(summary['errors_by_code'])})" if summary["errors_by_code"] else ""),
        f"  scored {summary['rows_scored']} rows in {summary['wall_time_s']:.1f} s "
        f"({summary['images_per_s']:.1f} img/s end to end"
        + (
            f"; {summary['rows_resumed']} rows kept from an earlier attempt"
            if summary["rows_resumed"]
            else ""
        )
        + ")",
        "  models: " + ", ".join(f"{m['name']} ({m['sha256'][:12]})" for m in summary["models"]),
    ]
    faces = summary.get("rows_by_faces")
    if faces:
        lines.insert(
            2,
            "  faces found: " + ", ".join(f"{k} in {n} rows" for k, n in faces.items()),
        )
    if summary.get("run_date"):
        lines[0] += f" (run date {summary['run_date']})"
    incremental = summary.get("incremental")
    if incremental:
        where = ", ".join(
            f"{s['rows']} in {s['output']}" for s in incremental["sources"] if s["rows"]
        )
        lines.insert(
            2,
            f"  incremental: {incremental['rows_skipped']} rows already scored by earlier runs"
            + (f" ({where})" if where else ""),
        )
    nodes = (summary.get("ray") or {}).get("nodes") or {}
    if len(nodes) > 1:
        lines.append("  nodes: " + ", ".join(f"{n['ip']} {n['rows']} rows" for n in nodes.values()))
    if summary.get("ensemble_version"):
        lines.append(
            f"  ensemble {summary['ensemble_version']} (threshold {summary['threshold']:.6g})"
        )
    for sample in summary["error_samples"][:5]:
        lines.append(f"  row {sample['row']}: {sample['error_code']}: {sample['error']}")
    return lines


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in codes.items())
