"""ensemble.json and the apply-time math of an ensemble (docs/contracts.md, "the ensemble
file").

Scoring is the first stage that applies an ensemble, so the file format and the pure combining
functions live here; ``ensemble/`` fits their parameters and calls the same functions, so there
is one piece of math, not two. Only numpy and the standard library: a scoring node imports this.

Every combining function takes ``P``, an ``(n, m)`` float array of probabilities of the
ensemble's positive class (one column per member, already oriented), and returns ``(n,)``
float64 probabilities; NaN in a row gives NaN for that row.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import DataError
from models.probabilities import decide, flip_where, sigmoid
from scoring.modelset import MODEL_FILE_KEYS, ModelFile

FORMAT = "genderscore-ensemble"
SCHEMA_VERSION = 1
METHODS = ("mean", "weighted", "logit", "stacking")
CALIBRATIONS = ("none", "platt", "isotonic")
# Probabilities arrive as float32 and saturate at 0 or 1; clipping keeps their logits finite
# (about +-16), which is also where float32 sigmoid outputs stop changing.
EPS = 1e-7
# Keys that describe a tuning run (when, where the scores were) rather than what was tuned:
# left out of the version hash so the same data and seed give the same version.
_UNHASHED = ("version", "created_at", "tuned_with")


# --- pure apply-time functions ------------------------------------------------------------


def to_logits(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities, clipped to ``[EPS, 1 - EPS]`` first (NaN stays NaN)."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def combine_mean(P: np.ndarray) -> np.ndarray:
    """Mean of the members' probabilities."""
    return np.asarray(P, dtype=np.float64).mean(axis=1)


def combine_weighted(P: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of probabilities; ``weights`` are non-negative and sum to 1."""
    return np.asarray(P, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)


def combine_logit_mean(P: np.ndarray) -> np.ndarray:
    """Sigmoid of the mean of the members' logits (a geometric mean of odds)."""
    return sigmoid(to_logits(P).mean(axis=1))


def combine_stacking(P: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """Logistic regression on the members' logits: ``sigmoid(intercept + logits @ coef)``."""
    return sigmoid(float(intercept) + to_logits(P) @ np.asarray(coef, dtype=np.float64))


def calibrate_platt(p: np.ndarray, a: float, b: float) -> np.ndarray:
    """Platt scaling on the logit: ``sigmoid(a * logit(p) + b)``."""
    return sigmoid(float(a) * to_logits(p) + float(b))


def calibrate_isotonic(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A fitted isotonic map: linear between its knots, clipped outside (as scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip").predict``)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.interp(p, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    out[np.isnan(p)] = np.nan
    return out


def apply_combiner(method: str, params: Mapping[str, Any], P: np.ndarray) -> np.ndarray:
    """Dispatch on the combiner's name with its fitted parameters."""
    if method == "mean":
        return combine_mean(P)
    if method == "weighted":
        return combine_weighted(P, params["weights"])
    if method == "logit":
        return combine_logit_mean(P)
    if method == "stacking":
        return combine_stacking(P, params["coef"], params["intercept"])
    raise DataError(f"unknown ensemble method {method!r}: use one of {', '.join(METHODS)}")


def apply_calibration(method: str, params: Mapping[str, Any], p: np.ndarray) -> np.ndarray:
    """Dispatch on the calibration's name (``none`` returns ``p`` unchanged)."""
    if method == "none":
        return np.asarray(p, dtype=np.float64)
    if method == "platt":
        return calibrate_platt(p, params["a"], params["b"])
    if method == "isotonic":
        return calibrate_isotonic(p, params["x"], params["y"])
    raise DataError(f"unknown calibration {method!r}: use one of {', '.join(CALIBRATIONS)}")


def content_version(content: Mapping[str, Any]) -> str:
    """The version of an ensemble: SHA-256 (16 hex) of its canonical JSON, without the keys
    that describe the run (``version``, ``created_at``, ``tuned_with``)."""
    body = {k: v for k, v in content.items() if k not in _UNHASHED}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays to Python, NaN and infinities to None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


# --- the file -------------------------------------------------------------------------------


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
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(
                f"ensemble file {path} does not exist: make one with 'genderscore ensemble tune'"
            ) from None
        except OSError as exc:
            raise DataError(f"cannot read ensemble file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise DataError(
                f"ensemble file {path} is not a JSON text file (not UTF-8): give the "
                "ensemble.json that 'genderscore ensemble tune' wrote"
            ) from None
        try:
            content = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"ensemble file {path} is not valid JSON: {exc}") from None
        if not isinstance(content, dict):
            raise DataError(f"ensemble file {path} must hold a JSON object")
        return cls(content, source=str(path))

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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.content, indent=2, allow_nan=False) + "\n"
        path.write_text(text, encoding="utf-8")
        return path

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
