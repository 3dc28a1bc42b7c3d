"""ensemble.json (the ensemble file, docs/contracts.md): load/validate, check_models, combine, decide, version."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from models.errors import DataError
from models.probabilities import sigmoid
from scoring.ensemble_math import (
    calibrate_isotonic,
    combine_logit_mean,
    combine_stacking,
    to_logits,
)
from scoring.ensemble_spec import EnsembleSpec

SHA_A = "a" * 64
SHA_B = "b" * 64


def member(name: str, sha: str, positive: str = "male") -> dict:
    return {
        "name": name,
        "path": f"/models/{name}.onnx",
        "sha256": sha,
        "input_size": [64, 64],
        "class_names": ["female", "male"],
        "positive_class": positive,
    }


def content(**over) -> dict:
    c = {
        "class_names": ["female", "male"],
        "positive_class": "male",
        "models": [member("a", SHA_A), member("b", SHA_B)],
        "combiner": {"method": "weighted", "params": {"weights": [0.75, 0.25]}},
        "calibration": {"method": "none", "params": {}},
        "threshold": 0.5,
        "objective": "eer",
    }
    c.update(over)
    return c


def test_round_trip_and_version_is_content_hash(tmp_path):
    spec = EnsembleSpec.build(content())
    path = spec.save(tmp_path / "e.json")
    again = EnsembleSpec.load(path)
    assert again.version == spec.version and len(spec.version) == 16
    # The hash is part of the file format: a changed one would refuse every existing file.
    assert spec.version == "e51119ed185d5f7e"
    assert [m.name for m in again.models] == ["a", "b"]
    assert again.models[0].input_size == (64, 64)
    # same decision rule -> same version; a different threshold -> a different one
    assert EnsembleSpec.build(content()).version == spec.version
    assert EnsembleSpec.build(content(threshold=0.6)).version != spec.version


def test_combine_and_decide():
    spec = EnsembleSpec.build(content(threshold=0.5))
    p = spec.combine({"a": np.array([0.9, 0.1, np.nan]), "b": np.array([0.1, 0.5, 0.5])})
    assert p.dtype == np.float32
    np.testing.assert_allclose(p[:2], [0.7, 0.2], rtol=1e-6)
    assert np.isnan(p[2])
    assert spec.decide(p).tolist() == ["male", "female", None]
    # threshold is inclusive
    assert spec.decide(np.array([0.5], dtype=np.float32)).tolist() == ["male"]


def test_member_with_other_positive_class_is_flipped():
    c = content(models=[member("a", SHA_A), member("b", SHA_B, positive="female")])
    c["combiner"] = {"method": "mean", "params": {}}
    spec = EnsembleSpec.build(c)
    p = spec.combine({"a": np.array([0.8]), "b": np.array([0.4])})  # b: P(female)=0.4
    np.testing.assert_allclose(p, [0.7], rtol=1e-6)


def test_stacking_and_logit_mean_math():
    P = np.array([[0.9, 0.2], [0.5, 0.5], [1.0, 0.0]])
    z = to_logits(P)
    np.testing.assert_allclose(combine_logit_mean(P), sigmoid(z.mean(axis=1)))
    np.testing.assert_allclose(combine_stacking(P, [2.0, 1.0], -0.5), sigmoid(-0.5 + z @ [2, 1]))
    assert np.isfinite(z).all()  # saturated probabilities stay finite


def test_isotonic_apply_matches_sklearn():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=300)
    y = (rng.uniform(size=300) < x**2).astype(int)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(x, y)
    q = np.r_[rng.uniform(-0.2, 1.2, size=200), 0.0, 1.0]
    np.testing.assert_allclose(
        calibrate_isotonic(q, iso.X_thresholds_, iso.y_thresholds_), iso.predict(q)
    )


def test_check_models():
    spec = EnsembleSpec.build(content())
    spec.check_models([("a", SHA_A), ("b", SHA_B), ("extra", "c" * 64)])
    with pytest.raises(DataError, match=r"lack ensemble model\(s\) b"):
        spec.check_models([("a", SHA_A)])
    with pytest.raises(DataError, match="model 'b' changed"):
        spec.check_models([("a", SHA_A), ("b", "c" * 64)])
    with pytest.raises(DataError, match=r"no probabilities for ensemble model\(s\) b"):
        spec.combine({"a": np.array([0.5])})


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(threshold=0.3), "edited after tuning"),
        (lambda c: c.pop("models"), "missing key 'models'"),
        (lambda c: c.update(positive_class="other"), "positive_class 'other'"),
        (lambda c: c["combiner"].update(method="median"), "combiner.method must be one of"),
        (lambda c: c["combiner"]["params"].update(weights=[0.5]), "2 non-negative numbers"),
        (lambda c: c["models"][0].update(sha256="xyz"), "sha256 must be 64"),
        (
            lambda c: c["models"][1].update(name="b-1"),
            r"models\[1\] 'b-1': model name 'b-1' must be a letter then letters, digits or '_'",
        ),
        (lambda c: c.update(format="other"), "not an ensemble file"),
    ],
)
def test_load_rejects_bad_files(tmp_path, edit, match):
    c = EnsembleSpec.build(content()).to_dict()
    edit(c)
    path = tmp_path / "e.json"
    path.write_text(json.dumps(c))
    with pytest.raises(DataError, match=match):
        EnsembleSpec.load(path)


def test_load_missing_and_broken_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        EnsembleSpec.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        EnsembleSpec.load(tmp_path / "bad.json")
