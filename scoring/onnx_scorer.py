"""ONNX Runtime scoring: sessions sized to the CPUs a worker holds, and the Ray actor that
reads and decodes manifest rows and turns them into ``p_<model>`` (and the ensemble's
columns)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from convert.metadata import INPUT_NAME, PROB_OUTPUT
from models.onnx_session import make_session
from scoring.decode import FACE_FIELDS, STATUS_OK, decode_batch, image_column
from scoring.modelset import ModelRef

META_KEY = b"genderscore"
ENSEMBLE_COLUMNS = ("p_ensemble", "label", "threshold", "ensemble_version")


def predict_probs(session: Any, images: np.ndarray) -> np.ndarray:
    """``prob`` (float32, one per image) for a uint8 NHWC batch."""
    if len(images) == 0:
        return np.zeros(0, dtype=np.float32)
    (prob,) = session.run([PROB_OUTPUT], {INPUT_NAME: images})
    return np.asarray(prob, dtype=np.float32).reshape(len(images))


def output_schema(
    staged: pa.Schema,
    models: Sequence[ModelRef],
    *,
    ensemble: bool,
    metadata: Mapping[str, Any] | None = None,
) -> pa.Schema:
    """The scores file's columns in order (docs/contracts.md), with the run's metadata under ``genderscore``."""
    fields = [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("id", pa.string()),
        pa.field("path", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_code", pa.string()),
        pa.field("error", pa.string()),
        *FACE_FIELDS,
    ]
    fields += [pa.field(m.column, pa.float32()) for m in models]
    if ensemble:
        fields += [
            pa.field("p_ensemble", pa.float32()),
            pa.field("label", pa.string()),
            pa.field("threshold", pa.float64()),
            pa.field("ensemble_version", pa.string()),
        ]
    known = {f.name for f in fields}
    fields += [staged.field(n) for n in staged.names if n not in known]
    meta = {META_KEY: json.dumps(dict(metadata)).encode()} if metadata is not None else None
    return pa.schema(fields, metadata=meta)


def tensor_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A Ray tensor column as one ndarray (zero-copy when it is a single chunk)."""
    chunks = [c.to_numpy() for c in column.chunks if len(c)]
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks) if chunks else np.zeros((0,), dtype=np.uint8)


class OnnxScorer:
    """Ray Data actor: one ORT session per model, created once, then ``__call__`` per batch.

    ``models`` are ``(ModelRef, onnx bytes or an object ref to them)`` pairs: the driver ships
    the bytes it hashed, so every worker scores with exactly the files the run's metadata names
    and needs no access to them. ``ensemble`` is the content of ``ensemble.json`` (JSON data).
    ``decode``: the keyword arguments of :func:`~scoring.decode.decode_batch` (``requests``,
    ``root``, ``reads``) with which each batch of manifest rows is read and decoded here.
    """

    def __init__(
        self,
        models: Sequence[tuple[ModelRef, Any]],
        threads: int,
        schema: pa.Schema,
        decode: Mapping[str, Any],
        ensemble: Mapping[str, Any] | None = None,
    ):
        self.models_ = [ref for ref, _ in models]
        self.sessions_ = [make_session(_fetch(data), threads) for _, data in models]
        self.schema_ = schema.remove_metadata()
        self.decode_ = dict(decode)
        self.ensemble_ = None
        if ensemble is not None:
            from scoring.ensemble_spec import EnsembleSpec

            self.ensemble_ = EnsembleSpec(ensemble)

    def __call__(self, batch: pa.Table) -> pa.Table:
        decoded = decode_batch(batch, **self.decode_)
        return score_table(decoded, self.models_, self.sessions_, self.schema_, self.ensemble_)


def _fetch(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    import ray

    return ray.get(data)


def score_table(
    batch: pa.Table,
    models: Sequence[ModelRef],
    sessions: Sequence[Any],
    schema: pa.Schema,
    ensemble: Any = None,
) -> pa.Table:
    """Score the ok rows of a decoded batch; error rows get nulls. Returns ``schema``'s columns."""
    n = batch.num_rows
    ok = np.asarray(batch.column("status").to_numpy(zero_copy_only=False) == STATUS_OK)
    idx = np.flatnonzero(ok)
    cols: dict[str, pa.Array] = {}
    probs: dict[str, np.ndarray] = {}
    cache: dict[str, np.ndarray] = {}
    for ref, session in zip(models, sessions, strict=True):
        name = image_column(ref.input_size, ref.framing)
        if name not in cache:
            images = tensor_to_numpy(batch.column(name))
            cache[name] = images if len(idx) == n else images[idx]
        p = predict_probs(session, cache[name])
        probs[ref.name] = p
        cols[ref.column] = _scatter(p, idx, n, pa.float32())
    if ensemble is not None:
        p_ens = ensemble.combine(probs) if len(idx) else np.zeros(0, np.float32)
        labels = ensemble.decide(p_ens) if len(idx) else np.zeros(0, object)
        cols["p_ensemble"] = _scatter(p_ens.astype(np.float32), idx, n, pa.float32())
        full = np.full(n, None, dtype=object)
        full[idx] = labels
        cols["label"] = pa.array(full.tolist(), pa.string())
        cols["threshold"] = pa.array(np.full(n, ensemble.threshold), pa.float64())
        cols["ensemble_version"] = pa.array([ensemble.version] * n, pa.string())
    arrays = []
    for field in schema:
        if field.name in cols:
            arrays.append(cols[field.name])
        else:
            arrays.append(batch.column(field.name).cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _scatter(values: np.ndarray, idx: np.ndarray, n: int, type_: pa.DataType) -> pa.Array:
    if len(idx) == n:
        return pa.array(values, type_)
    full = np.zeros(n, dtype=values.dtype)
    full[idx] = values
    mask = np.ones(n, dtype=bool)
    mask[idx] = False
    return pa.array(full, type_, mask=mask)
