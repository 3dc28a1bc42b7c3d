"""jsonable: the one conversion to plain JSON values behind run.json, metrics.json,
ensemble.json and the summaries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.jsonable import jsonable


def test_numpy_tuples_and_paths_become_plain_json_and_nan_becomes_null():
    value = {
        1: np.float32(0.25),
        "n": np.int64(7),
        "ok": np.bool_(True),
        "arr": np.array([[1.0, np.nan], [np.inf, 2.0]]),
        "scalar": np.array(3.5),
        "pair": (np.int32(2), "b"),
        "path": Path("/runs/r1"),
        "nan": float("nan"),
        "none": None,
    }
    got = jsonable(value)
    assert got == {
        "1": 0.25,
        "n": 7,
        "ok": True,
        "arr": [[1.0, None], [None, 2.0]],
        "scalar": 3.5,
        "pair": [2, "b"],
        "path": "/runs/r1",
        "nan": None,
        "none": None,
    }
    assert type(got["n"]) is int and type(got["ok"]) is bool and type(got["1"]) is float
    json.dumps(got, allow_nan=False)  # strict JSON: no NaN, no numpy types left
