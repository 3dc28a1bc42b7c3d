"""The ensemble file's schema (docs/contracts.md, "the ensemble file"): :class:`EnsembleSpec`
checks ensemble.json's content in one place and applies it (members, combiner, calibration,
threshold); :mod:`scoring.ensemble_io` reads and writes the text, :mod:`scoring.ensemble_math`
holds the combining functions. A scoring node imports this: numpy and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import DataError
from models.jsonable import jsonable
from models.probabilities import decide, flip_where
from scoring.ensemble_io import content_version, read_ensemble_json, write_ensemble_json
from scoring.ensemble_math import CALIBRATIONS, METHODS, apply_calibration, apply_combiner
from scoring.modelset import MODEL_FILE_KEYS, ModelFile

FORMAT = "genderscore-ensemble"
SCHEMA_VERSION = 1


class EnsembleSpec:
    """A fitted ensemble: members, combiner, calibration and threshold, read from JSON.

    ``combine`` turns the members' probabilities into P(positive class); ``decide`` turns that
    into class names (``p >= threshold`` is the positive class).
    """

    def __init__(self, content: Mapping[str, Any], source: str = "ensemble") -> None:
        self.content = dict(content)
        self.source = source
        self.validate()

    # construction and storage

    @classmethod
    def load(cls, path: str | Path) -> EnsembleSpec:
        """Read and validate ``ensemble.json``; a DataError says what is wrong with it."""
        return cls(read_ensemble_json(path), source=str(Path(path)))

    @classmethod
    def build(cls, content: Mapping[str, Any]) -> EnsembleSpec:
        """Stamp format, schema and version onto new content and validate it."""
        body = jsonable({"format": FORMAT, "schema_version": SCHEMA_VERSION, **content})
        body.pop("version", None)
        body["version"] = content_version(body)
        return cls(body)

    def to_dict(self) -> dict:
        return dict(self.content)

    def save(self, path: str | Path) -> Path:
        return write_ensemble_json(self.content, path)

    # validation: every check in one place, each with a precise message

    def validate(self) -> None:
        """Raise DataError naming the first problem with the content."""
        c = self.content
        where = self.source

        def fail(msg: str) -> None:
            raise DataError(f"{where}: {msg}")

        if c.get("format") != FORMAT:
            fail(f"not an ensemble file (format is {c.get('format')!r}, expected {FORMAT!r})")
        if c.get("schema_version") != SCHEMA_VERSION:
            fail(
                f"schema_version {c.get('schema_version')!r} is not supported "
                f"(this genderscore reads {SCHEMA_VERSION}); re-run 'genderscore ensemble tune'"
            )
        for key in ("version", "class_names", "positive_class", "models", "combiner"):
            if key not in c:
                fail(f"missing key {key!r}")
        names = c["class_names"]
        if (
            not isinstance(names, list)
            or len(names) != 2
            or not all(isinstance(n, str) and n for n in names)
            or names[0] == names[1]
        ):
            fail(f"class_names must be two different names, got {names!r}")
        if c["positive_class"] not in names:
            fail(f"positive_class {c['positive_class']!r} is not one of {names}")
        models = c["models"]
        if not isinstance(models, list) or not models:
            fail("models must be a non-empty list")
        members = []
        for i, m in enumerate(models):
            members.append(_member(m, i, set(names), fail))
        seen = [m.name for m in members]
        if len(set(seen)) != len(seen):
            fail(f"model names must be unique, got {seen}")
        self._models = members
        self._check_combiner(c["combiner"], len(members), fail)
        self._check_calibration(c.get("calibration", {"method": "none", "params": {}}), fail)
        thr = c.get("threshold")
        if isinstance(thr, bool) or not isinstance(thr, int | float) or not math.isfinite(thr):
            fail(f"threshold must be a finite number, got {thr!r}")
        expected = content_version(c)
        if c["version"] != expected:
            fail(
                f"version {c['version']!r} does not match the content ({expected}): the file was "
                "edited after tuning; re-run 'genderscore ensemble tune' to change an ensemble"
            )

    @staticmethod
    def _check_combiner(comb: Any, m: int, fail) -> None:
        if not isinstance(comb, dict) or comb.get("method") not in METHODS:
            fail(f"combiner.method must be one of {', '.join(METHODS)}, got {comb!r:.80}")
        params = comb.get("params", {})
        method = comb["method"]
        if method == "weighted":
            w = _floats(params.get("weights"), "combiner.params.weights", fail)
            if len(w) != m or (w < 0).any() or not math.isclose(w.sum(), 1.0, abs_tol=1e-6):
                fail(f"combiner.params.weights must be {m} non-negative numbers summing to 1")
        if method == "stacking":
            coef = _floats(params.get("coef"), "combiner.params.coef", fail)
            if len(coef) != m:
                fail(f"combiner.params.coef must have {m} numbers (one per model)")
            _floats([params.get("intercept")], "combiner.params.intercept", fail)

    @staticmethod
    def _check_calibration(cal: Any, fail) -> None:
        if not isinstance(cal, dict) or cal.get("method") not in CALIBRATIONS:
            fail(f"calibration.method must be one of {', '.join(CALIBRATIONS)}")
        params = cal.get("params", {})
        if cal["method"] == "platt":
            _floats([params.get("a"), params.get("b")], "calibration.params a and b", fail)
        if cal["method"] == "isotonic":
            x = _floats(params.get("x"), "calibration.params.x", fail)
            y = _floats(params.get("y"), "calibration.params.y", fail)
            if len(x) == 0 or len(x) != len(y) or (np.diff(x) < 0).any() or (np.diff(y) < 0).any():
                fail("calibration.params x and y must be non-decreasing and of equal length")

    # the contract

    @property
    def models(self) -> list[ModelFile]:
        """Members in the order their columns enter the combiner."""
        return list(self._models)

    @property
    def threshold(self) -> float:
        return float(self.content["threshold"])

    @property
    def version(self) -> str:
        return str(self.content["version"])

    @property
    def class_names(self) -> tuple[str, str]:
        return tuple(self.content["class_names"])

    @property
    def positive_class(self) -> str:
        return str(self.content["positive_class"])

    @property
    def negative_class(self) -> str:
        return next(n for n in self.class_names if n != self.positive_class)

    @property
    def method(self) -> str:
        return str(self.content["combiner"]["method"])

    @property
    def calibration(self) -> str:
        return str(self.content.get("calibration", {}).get("method", "none"))

    @property
    def objective(self) -> str | None:
        return self.content.get("objective")

    def check_models(self, models: Iterable[tuple[str, str]]) -> None:
        """DataError unless every member is among ``(name, sha256)`` pairs with its SHA-256.

        Extra models are allowed (a scoring run may hold more models than the ensemble uses).
        """
        given = dict(models)
        missing = [m.name for m in self._models if m.name not in given]
        if missing:
            raise DataError(
                f"the scores lack ensemble model(s) {', '.join(missing)} (scored models: "
                f"{', '.join(sorted(given)) or 'none'}); score with the models listed in "
                f"{self.source}"
            )
        for m in self._models:
            if given[m.name] != m.sha256:
                raise DataError(
                    f"model {m.name!r} changed: {self.source} was tuned on a file with SHA-256 "
                    f"{m.sha256[:12]}..., the scores come from {str(given[m.name])[:12]}...; "
                    "re-tune the ensemble on scores from this model file"
                )

    def member_matrix(self, probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Stack the members' probabilities into ``(n, m)`` float64, oriented to the positive
        class (a member whose positive class differs enters as ``1 - p``)."""
        missing = [m.name for m in self._models if m.name not in probs]
        if missing:
            raise DataError(
                f"no probabilities for ensemble model(s) {', '.join(missing)} "
                f"(given: {', '.join(sorted(probs)) or 'none'})"
            )
        cols = [np.asarray(probs[m.name], dtype=np.float64) for m in self._models]
        if any(c.ndim != 1 for c in cols) or len({len(c) for c in cols}) != 1:
            raise DataError(
                f"probabilities must be 1-D arrays of equal length, got shapes "
                f"{[c.shape for c in cols]}"
            )
        P = np.column_stack(cols)
        bad = ~np.isnan(P) & ((P < 0) | (P > 1))
        if bad.any():
            col = self._models[int(np.nonzero(bad.any(axis=0))[0][0])].name
            raise DataError(f"probabilities of model {col!r} must lie in [0, 1]")
        return flip_where(P, [m.positive_class != self.positive_class for m in self._models])

    def combine_matrix(self, P: np.ndarray) -> np.ndarray:
        """Combiner then calibration on an oriented ``(n, m)`` matrix, as float32."""
        comb = self.content["combiner"]
        cal = self.content.get("calibration", {"method": "none", "params": {}})
        p = apply_combiner(comb["method"], comb.get("params", {}), P)
        p = apply_calibration(cal["method"], cal.get("params", {}), p)
        return p.astype(np.float32)

    def combine(self, probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """``{name: P(that model's positive class)}`` -> ``p_ensemble`` float32 (NaN where a
        member is NaN). Names not in the ensemble are ignored."""
        return self.combine_matrix(self.member_matrix(probs))

    def decide(self, p: np.ndarray) -> np.ndarray:
        """Class names (object array): positive where ``p >= threshold``, None where p is NaN."""
        return decide(p, self.threshold, self.positive_class, self.negative_class)

    def __repr__(self) -> str:
        names = ", ".join(m.name for m in self._models)
        return (
            f"EnsembleSpec(version={self.version!r}, method={self.method!r}, "
            f"calibration={self.calibration!r}, threshold={self.threshold:.6g}, models=[{names}])"
        )


def _floats(values: Any, what: str, fail) -> np.ndarray:
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        fail(f"{what} must be a list of numbers")
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        fail(f"{what} must be finite")
    return arr


def _member(m: Any, i: int, classes: set[str], fail) -> ModelFile:
    if not isinstance(m, dict):
        fail(f"models[{i}] must be an object")
    missing = [key for key in MODEL_FILE_KEYS if key not in m]
    if missing:
        fail(f"models[{i}] is missing {', '.join(map(repr, missing))}")
    name = m["name"]
    if not isinstance(m["class_names"], list) or set(m["class_names"]) != classes:
        fail(f"model {name!r}: class_names {m['class_names']!r} differ from the ensemble's")
    try:
        return ModelFile(**{key: m[key] for key in MODEL_FILE_KEYS})
    except DataError as exc:
        fail(f"models[{i}] {name!r}: {exc}")
