"""`genderscore ensemble tune|apply|evaluate` on Parquet files in scoring's format (the scores file, docs/contracts.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from ens_support import labeled, model_meta, one_line_error, run, write_scores

from ensemble.cli import cli
from models.cli_support import run_cli
from models.metrics import binary_metrics
from scoring.ensemble_spec import EnsembleSpec

N_ROWS, N_BAD = 600, 7


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Validation scores (7 error rows), test scores, and one tune with a report."""
    root = tmp_path_factory.mktemp("ens_cli")
    labels, probs = labeled(N_ROWS, seed=11)
    status = np.array(["ok"] * N_ROWS, dtype=object)
    status[:N_BAD] = "error"
    val = write_scores(root / "val.parquet", labels, probs, status=status)
    labels, probs = labeled(N_ROWS, seed=12)
    test = write_scores(root / "test.parquet", labels, probs)
    args = ["tune", "--scores", val, "--method", "auto", "--objective", "far=0.05"]
    args += ["--calibration", "platt", "--out", root / "ensemble.json"]
    args += ["--report", root / "report", "--n-boot", "300", "--seed", "3"]
    assert run_cli(cli, "genderscore ensemble", [str(a) for a in args]) == 0
    return {"root": root, "val": val, "test": test, "ensemble": root / "ensemble.json"}


def test_tune_writes_a_complete_ensemble_file(files):
    spec = EnsembleSpec.load(files["ensemble"])
    c = spec.content
    assert spec.objective == "far=0.05" and spec.calibration == "platt"
    assert [m.name for m in spec.models] == ["mnv2", "rn50", "effb0"]
    assert spec.models[0].sha256 == model_meta("mnv2")["sha256"]
    val = c["validation"]
    assert val["rows"] == {"total": N_ROWS, "used": N_ROWS - N_BAD, "dropped_not_ok": N_BAD}
    fp = val["fingerprint"]
    assert fp["rows"] == N_ROWS - N_BAD and sum(fp["label_counts"].values()) == fp["rows"]
    assert re.fullmatch(r"[0-9a-f]{64}", fp["sha256"])
    ens = val["ensemble"]
    assert ens["metrics"]["far"] <= 0.05
    for key in ("far", "frr", "accuracy", "macro_f1", "accuracy_female", "accuracy_male"):
        ci = ens["ci"][key]
        assert ci["low"] <= ci["estimate"] <= ci["high"]
    for name in ("mnv2", "rn50", "effb0"):
        single = val["models"][name]
        assert {"roc_auc", "eer", "threshold", "metrics"} <= set(single)
        assert single["metrics"]["far"] <= 0.05
    # the noise member is near chance, the ensemble at least as good as the best member
    assert val["models"]["effb0"]["roc_auc"] < 0.6
    assert ens["roc_auc"] >= val["models"]["mnv2"]["roc_auc"] - 0.005
    sel = c["selection"]
    assert [r["method"] for r in sel["results"]] == ["mean", "weighted", "logit", "stacking"]
    assert sel["chosen"] == spec.method and sel["cv_folds"] == 5


def test_tune_is_reproducible(files, capsys, tmp_path):
    args = ["tune", "--scores", files["val"], "--objective", "far=0.05", "--calibration"]
    args += ["platt", "--n-boot", "300", "--seed", "3", "--out", tmp_path / "again.json"]
    code, out, _ = run(capsys, *args)
    assert code == 0 and f"dropped {N_BAD} of {N_ROWS} rows" in out
    assert (
        EnsembleSpec.load(tmp_path / "again.json").version
        == EnsembleSpec.load(files["ensemble"]).version
    )


def test_report_files_exist_and_html_references_them(files):
    report = files["root"] / "report"
    page = (report / "index.html").read_text()
    for png in ("roc.png", "det.png", "histograms.png", "confusion.png", "reliability.png"):
        assert (report / png).stat().st_size > 5000
        assert f'src="{png}"' in page
    assert "ensemble" in page and "95%" in page
    assert "Methods by cross-validated FRR at FAR &lt;= 0.05" in page


def test_apply_reproduces_the_validation_decisions(files, capsys):
    out = files["root"] / "decided.parquet"
    code, stdout, _ = run(
        capsys, "apply", "--ensemble", files["ensemble"], "--scores", files["val"], "--out", out
    )
    assert code == 0 and f"{N_BAD} without a decision" in stdout
    table = pq.read_table(out)
    spec = EnsembleSpec.load(files["ensemble"])
    meta = json.loads(table.schema.metadata[b"genderscore"])
    assert meta["ensemble_version"] == spec.version
    df = table.to_pandas()
    assert len(df) == N_ROWS  # every row kept
    bad = df["status"] != "ok"
    assert df.loc[bad, "label"].isna().all() and df.loc[bad, "p_ensemble"].isna().all()
    ok = df[~bad]
    assert table.schema.field("p_ensemble").type == "float"
    assert (ok["threshold"] == spec.threshold).all() and (
        ok["ensemble_version"] == spec.version
    ).all()
    # the decided labels give exactly the FAR/FRR recorded at tuning
    y = (ok["true_label"] == "male").to_numpy().astype(int)
    m = binary_metrics(y, (ok["label"] == "male").to_numpy().astype(float), 0.5)
    recorded = spec.content["validation"]["ensemble"]["metrics"]
    assert m["far"] == recorded["far"] and m["frr"] == recorded["frr"]
    # and scoring's path (EnsembleSpec.combine) gives the same numbers
    p = spec.combine({name: ok[f"p_{name}"].to_numpy() for name in ("mnv2", "rn50", "effb0")})
    np.testing.assert_array_equal(p, ok["p_ensemble"].to_numpy())


def test_evaluate_reports_whether_the_target_held(files, capsys):
    out = files["root"] / "metrics.json"
    code, stdout, _ = run(
        capsys, "evaluate", "--ensemble", files["ensemble"], "--scores", files["test"],
        "--out", out, "--n-boot", "300", "--report", files["root"] / "eval_report",
    )  # fmt: skip
    assert code == 0 and "target far=0.05:" in stdout
    summary = json.loads(out.read_text())
    target = summary["target"]
    assert target["held"] == (summary["ensemble"]["metrics"]["far"] <= 0.05)
    assert target["ci"]["low"] <= target["far"] <= target["ci"]["high"]
    assert set(summary["models"]) == {"mnv2", "rn50", "effb0"}
    assert (files["root"] / "eval_report" / "index.html").exists()
    # on the validation file itself, evaluate reproduces the tuned metrics
    code, _, _ = run(
        capsys, "evaluate", "--ensemble", files["ensemble"], "--scores", files["val"],
        "--out", out, "--n-boot", "300",
    )  # fmt: skip
    again = json.loads(out.read_text())["ensemble"]["metrics"]
    recorded = EnsembleSpec.load(files["ensemble"]).content["validation"]["ensemble"]["metrics"]
    assert again == recorded


def test_changed_or_missing_model_is_a_clear_error(files, capsys, tmp_path):
    labels, probs = labeled(50, seed=1)
    models = [model_meta(n) for n in probs]
    models[1]["sha256"] = "0" * 64
    changed = write_scores(tmp_path / "changed.parquet", labels, probs, models=models)
    line = one_line_error(
        capsys, "apply", "--ensemble", files["ensemble"], "--scores", changed, "--out",
        tmp_path / "d.parquet",
    )  # fmt: skip
    assert "model 'rn50' changed" in line and "re-tune" in line
    del probs["effb0"]
    fewer = write_scores(tmp_path / "fewer.parquet", labels, probs)
    line = one_line_error(capsys, "evaluate", "--ensemble", files["ensemble"], "--scores", fewer)
    assert "lack ensemble model(s) effb0" in line
    assert not (tmp_path / "d.parquet").exists()


def _bad_scores(tmp_path: Path, kind: str) -> Path:
    labels, probs = labeled(60, seed=2)
    path = tmp_path / f"{kind}.parquet"
    if kind == "no_label":
        return write_scores(path, None, probs)
    if kind == "one_class":
        return write_scores(path, ["male"] * 60, probs)
    if kind == "nan":
        probs["rn50"][5] = np.nan
        return write_scores(path, labels, probs)
    if kind == "unknown_column":
        models = [model_meta(n) for n in ("mnv2", "rn50")]
        return write_scores(path, labels, probs, models=models)
    if kind == "strange_label":
        return write_scores(path, np.where(labels == "male", "male", "woman"), probs)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("no_label", "has no label column 'true_label'"),
        ("one_class", "one class only"),
        ("nan", r"1 ok row\(s\) have a NaN score in p_rn50"),
        ("unknown_column", r"unknown model column\(s\) p_effb0"),
        ("strange_label", r"labels \['woman'\] are not the models' classes"),
    ],
)
def test_tune_bad_input_is_one_line(capsys, tmp_path, kind, match):
    path = _bad_scores(tmp_path, kind)
    line = one_line_error(capsys, "tune", "--scores", path, "--out", tmp_path / "e.json")
    assert re.search(match, line), line
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--objective", "far=1.5"], r"target must be a rate in \[0, 1\)"),
        (["--objective", "auc"], "unknown objective"),
        (["--positive", "robot"], r"--positive 'robot' is not one of the models' classes"),
        (["--method", "median"], "Invalid value for '--method'"),
        (["--models", "a.onnx"], "--models, --scores-out, .* go with --manifest"),
    ],
)
def test_tune_bad_arguments_are_one_line(files, capsys, tmp_path, args, match):
    line = one_line_error(
        capsys, "tune", "--scores", files["val"], *args, "--out", tmp_path / "e.json"
    )
    assert re.search(match, line), line


def test_tune_needs_scores_or_manifest(capsys):
    assert "either --scores" in one_line_error(capsys, "tune")


def test_positive_female_and_isotonic_mean(files, capsys, tmp_path):
    out = tmp_path / "female.json"
    args = ["tune", "--scores", files["val"], "--positive", "female", "--method", "mean"]
    args += [
        "--calibration",
        "isotonic",
        "--objective",
        "frr=0.02",
        "--out",
        out,
        "--n-boot",
        "200",
    ]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    spec = EnsembleSpec.load(out)
    assert spec.positive_class == "female" and spec.method == "mean"
    m = spec.content["validation"]["ensemble"]["metrics"]
    assert m["frr"] <= 0.02 and m["class_names"] == ["male", "female"]
    df = pq.read_table(files["val"]).to_pandas()
    ok = df[df["status"] == "ok"]
    p = spec.combine({n: ok[f"p_{n}"].to_numpy() for n in ("mnv2", "rn50", "effb0")})
    # P(female) is high for the women
    assert p[ok["true_label"].to_numpy() == "female"].mean() > 0.7


@pytest.mark.parametrize(
    ("placeholder", "expect"),
    [("male", {"male", "female"}), ("0", {"0", "1"}), ("0.5", None)],
)
def test_submission_in_the_sample_format(files, capsys, tmp_path, placeholder, expect):
    df = pq.read_table(files["test"]).to_pandas()
    ids = df["id"].tolist()[::-1][:100]  # the sample's own order
    sample = tmp_path / "sample_submission.csv"
    pd.DataFrame({"Id": ids, "Gender": placeholder}).to_csv(sample, index=False)
    out = tmp_path / "preds.csv"
    code, _, err = run(
        capsys, "apply", "--ensemble", files["ensemble"], "--scores", files["test"],
        "--out", tmp_path / "d.parquet", "--submission", sample, "--submission-out", out,
    )  # fmt: skip
    assert code == 0, err
    sub = pd.read_csv(out, dtype=str)
    assert list(sub.columns) == ["Id", "Gender"] and sub["Id"].tolist() == ids
    decided = pq.read_table(tmp_path / "d.parquet").to_pandas().set_index("id").loc[ids]
    if expect is None:
        np.testing.assert_allclose(sub["Gender"].astype(float), decided["p_ensemble"], rtol=1e-6)
    else:
        assert set(sub["Gender"]) <= expect
        is_male = sub["Gender"].isin(["male", "1"]).to_numpy()
        assert (is_male == (decided["label"] == "male").to_numpy()).all()


def test_submission_ids_must_be_scored(files, capsys, tmp_path):
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"id": ["img00001", "nope1", "nope2"], "label": ""}).to_csv(sample, index=False)
    line = one_line_error(
        capsys, "apply", "--ensemble", files["ensemble"], "--scores", files["test"],
        "--out", tmp_path / "d.parquet", "--submission", sample, "--submission-out",
        tmp_path / "p.csv",
    )  # fmt: skip
    assert "2 of 3 ids of" in line and "not in the scores" in line


def test_the_ensemble_stage_runs_without_tensorflow(files, tmp_path):
    # a scoring node has no TensorFlow: tune, apply and evaluate must not import it
    code = (
        "import sys\n"
        "from models.cli_support import run_cli\n"
        "from ensemble.cli import cli\n"
        f"args = ['apply', '--ensemble', {str(files['ensemble'])!r}, '--scores', "
        f"{str(files['test'])!r}, '--out', {str(tmp_path / 'd.parquet')!r}]\n"
        "assert run_cli(cli, 'x', args) == 0\n"
        "import ensemble.tune, ensemble.evaluation, ensemble.report\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    "objective", ["far=0.01", "frr=0.05", "eer", "macro-f1", "balanced-accuracy"]
)
def test_every_objective_tunes_and_evaluates(files, capsys, tmp_path, objective):
    out = tmp_path / "e.json"
    args = ["tune", "--scores", files["val"], "--method", "logit", "--objective", objective]
    code, stdout, err = run(capsys, *args, "--n-boot", "100", "--out", out)
    assert code == 0, err
    assert f"for {objective}" in stdout
    assert EnsembleSpec.load(out).objective == objective
    code, stdout, err = run(capsys, "evaluate", "--ensemble", out, "--scores", files["test"])
    assert code == 0, err
    assert objective in stdout and "on validation" in stdout
