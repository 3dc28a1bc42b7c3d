"""Synthetic scores with known distributions, scoring-format Parquet files and the CLI
runner, for the ensemble tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ensemble.cli import cli
from models.cli_support import run_cli


def synthetic_scores(
    n: int, seed: int, *, separation: tuple[float, ...] = (2.0, 1.0, 0.0), prevalence: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and an (n, m) probability matrix: member j's logit is
    ``separation[j] * (y - 0.5) * 2 + N(0, 1)``, so separation 0 is pure noise."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < prevalence).astype(np.int64)
    sign = 2.0 * y - 1.0
    z = np.column_stack([s * sign + rng.normal(size=n) for s in separation])
    return y, (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def model_meta(name: str, positive: str = "male") -> dict:
    """A model's entry in scoring's Parquet metadata (the scores file, docs/contracts.md)."""
    return {
        "name": name,
        "path": f"/models/{name}.onnx",
        "sha256": hashlib.sha256(name.encode()).hexdigest(),
        "input_size": [64, 64],
        "class_names": ["female", "male"],
        "positive_class": positive,
    }


def write_scores(
    path: Path,
    labels: list | np.ndarray | None,
    probs: dict[str, np.ndarray],
    *,
    models: list[dict] | None = None,
    status: np.ndarray | None = None,
    ids: list[str] | None = None,
    kept: dict[str, list] | None = None,
) -> Path:
    """A scoring output as ``scoring run`` writes it: columns, nulls on error rows, metadata;
    ``kept``: manifest columns kept with ``--keep-columns`` (name -> values)."""
    n = len(next(iter(probs.values())))
    status = np.asarray(status if status is not None else ["ok"] * n)
    ok = status == "ok"
    ids = ids if ids is not None else [f"img{i:05d}" for i in range(n)]
    cols = {
        "row": pa.array(np.arange(n), pa.int64()),
        "id": pa.array(ids, pa.string()),
        "path": pa.array([f"/data/{i}.jpg" for i in ids], pa.string()),
        "status": pa.array(status.tolist(), pa.string()),
        "error_code": pa.array([None if o else "decode_failed" for o in ok], pa.string()),
        "error": pa.array([None if o else "cannot decode" for o in ok], pa.string()),
    }
    for name, p in probs.items():
        cols[f"p_{name}"] = pa.array(np.asarray(p, np.float32), pa.float32(), mask=~ok)
    if labels is not None:
        cols["true_label"] = pa.array([str(v) for v in labels], pa.string())
    for name, values in (kept or {}).items():
        cols[name] = pa.array(list(values))
    models = models if models is not None else [model_meta(name) for name in probs]
    meta = {
        "run_id": "test",
        "created_at": "2026-01-01T00:00:00+00:00",
        "models": models,
        "ensemble_version": None,
    }
    table = pa.table(cols).replace_schema_metadata({b"genderscore": json.dumps(meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def labeled(n: int, seed: int, separation=(2.0, 1.0, 0.0), names=("mnv2", "rn50", "effb0")):
    """Class names and a {model: P(male)} dict from :func:`synthetic_scores`."""
    y, X = synthetic_scores(n, seed, separation=separation)
    labels = np.where(y == 1, "male", "female")
    return labels, {name: X[:, j] for j, name in enumerate(names)}


def run(capsys, *args) -> tuple[int, str, str]:
    """``genderscore ensemble ARGS``: exit code, stdout, stderr."""
    code = run_cli(cli, "genderscore ensemble", [str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(capsys, *args) -> str:
    """The one stderr line of a run that must fail with exit code 2."""
    code, _, err = run(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    return lines[0]
