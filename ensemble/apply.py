"""``ensemble apply``: add the ensemble's probability and decision to a scores table, and
optionally write a Kaggle-style submission shaped like the competition's sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ensemble.scores import META_KEY, ScoresFile
from models.errors import DataError
from models.probabilities import flip_where
from scoring.ensemble_spec import EnsembleSpec

DECISION_COLUMNS = ("p_ensemble", "label", "threshold", "ensemble_version")


def decide_table(spec: EnsembleSpec, scores: ScoresFile) -> pa.Table:
    """The scores table plus ``p_ensemble`` (float32), ``label`` (class name), ``threshold``
    and ``ensemble_version`` (docs/contracts.md, "the scores file"). Error rows keep nulls; every row is kept."""
    spec.check_models(scores.model_pairs())
    ok = scores.ok_mask()
    p = spec.combine({m.name: scores.probs(m.name) for m in spec.models})
    bad = ok & np.isnan(p)
    if bad.any():
        raise DataError(
            f"{scores.path}: {int(bad.sum())} ok row(s) have a NaN score for an ensemble model; "
            "re-score them or mark them as errors"
        )
    p[~ok] = np.nan
    labels = spec.decide(p)
    n = len(p)
    table = scores.table.drop_columns(
        [c for c in DECISION_COLUMNS if c in scores.table.column_names]
    )
    table = table.append_column("p_ensemble", pa.array(p, type=pa.float32(), mask=~ok))
    table = table.append_column("label", pa.array(labels.tolist(), type=pa.string()))
    table = table.append_column("threshold", pa.array(np.full(n, spec.threshold), pa.float64()))
    table = table.append_column("ensemble_version", pa.array([spec.version] * n, pa.string()))
    meta = dict(table.schema.metadata or {})
    info = dict(scores.meta)
    info["ensemble_version"] = spec.version
    meta[META_KEY] = json.dumps(info).encode()
    return table.replace_schema_metadata(meta)


def write_table(table: pa.Table, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    return out


def submission(sample_csv: str | Path, decided: pa.Table, spec: EnsembleSpec) -> pd.DataFrame:
    """The sample's rows, ids and column names, with its label column filled in the sample's
    format: class names, 0/1 (index in the ensemble's ``class_names``), or probabilities of
    ``class_names[1]``."""
    sample_csv = Path(sample_csv)
    try:
        sample = pd.read_csv(sample_csv, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read sample submission {sample_csv}: {exc}") from None
    if sample.shape[1] != 2:
        raise DataError(
            f"{sample_csv} has columns {list(sample.columns)}: a sample submission needs exactly "
            "two, the id column then the label column"
        )
    id_col, label_col = sample.columns
    fmt = _label_format(sample[label_col], spec, sample_csv)
    key, lookup = _match_ids(sample[id_col], decided, sample_csv)
    rows = lookup.loc[sample[id_col].to_numpy()]
    missing = rows["label"].isna().to_numpy()
    if missing.any():
        ids = sample[id_col][missing].tolist()
        raise DataError(
            f"{int(missing.sum())} id(s) of {sample_csv} have no prediction (their images failed "
            f"to score), e.g. {ids[:3]}; fix those images and score again"
        )
    classes = spec.class_names
    if fmt == "names":
        values = rows["label"].to_numpy()
    elif fmt == "index":
        values = (rows["label"].to_numpy() == classes[1]).astype(int)
    else:
        p = rows["p_ensemble"].to_numpy(dtype=np.float64)
        values = flip_where(p, spec.positive_class != classes[1])
    return pd.DataFrame({id_col: sample[id_col].to_numpy(), label_col: values})


def _label_format(values: pd.Series, spec: EnsembleSpec, where: Path) -> str:
    seen = [v for v in values.unique().tolist() if v != ""]
    if not seen or set(seen) <= set(spec.class_names):
        return "names"
    try:
        nums = np.array([float(v) for v in seen])
    except ValueError:
        raise DataError(
            f"{where}: cannot tell the label format from sample values {seen[:3]}: expected the "
            f"class names {list(spec.class_names)}, 0/1 or probabilities"
        ) from None
    if set(nums.tolist()) <= {0.0, 1.0}:
        return "index"
    if ((nums >= 0) & (nums <= 1)).all():
        return "probability"
    raise DataError(f"{where}: sample labels {seen[:3]} are neither 0/1 nor probabilities")


def _match_ids(ids: pd.Series, decided: pa.Table, where: Path) -> tuple[str, pd.DataFrame]:
    """Find the scores' key that the sample's ids are: ``id``, or the image's file name or stem
    (Kaggle samples often use one of those)."""
    frame = decided.select(
        [c for c in ("id", "path", "label", "p_ensemble") if c in decided.column_names]
    ).to_pandas()
    paths = frame["path"].astype(str) if "path" in frame else None
    keys = {}
    if "id" in frame:
        keys["id"] = frame["id"].astype(str)
    if paths is not None:
        keys["file name"] = paths.map(lambda s: Path(s).name)
        keys["file stem"] = paths.map(lambda s: Path(s).stem)
    wanted = set(ids.tolist())
    best = ("", 0)
    for name, key in keys.items():
        found = len(wanted & set(key.tolist()))
        if found == len(wanted):
            if key.duplicated().any():
                dup = key[key.duplicated()].iloc[0]
                raise DataError(f"the scores hold {name} {dup!r} more than once")
            return name, frame.set_index(key.to_numpy())
        best = max(best, (name, found), key=lambda t: t[1])
    raise DataError(
        f"{len(wanted) - best[1]} of {len(wanted)} ids of {where} are not in the scores (best "
        f"match: {best[0] or 'none'}): score the images the sample lists"
    )
