"""`genderscore ensemble evaluate|tune --group-by`: the per-group tables printed, in the JSON
and in the report; `tune --max-gap`; bad input as one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from ens_support import labeled, one_line_error, run, write_scores

from ensemble.cli import cli
from models.cli_support import run_cli
from scoring.ensemble_spec import EnsembleSpec

N_ROWS = 1200
BANDS = "age=0,18,40,60,200"


def groups_of(labels: np.ndarray, seed: int) -> dict[str, list]:
    """Kept manifest columns, as CSV manifests keep them (text): race codes 0-3 plus a rare
    5 (pooled) and 40 nulls (a 'missing' group); age; a camera only men were shot with."""
    rng = np.random.default_rng(seed + 1000)
    race = rng.choice(["0", "1", "2", "3"], len(labels), p=[0.4, 0.25, 0.2, 0.15]).astype(object)
    race[:10] = "5"
    race[10:50] = None
    age = rng.integers(1, 95, len(labels)).astype(str).astype(object)
    age[50:55] = ""
    camera = rng.choice(["phone", "web"], len(labels)).astype(object)
    camera[np.flatnonzero(labels == "male")[:60]] = "studio"
    return {"race": race.tolist(), "age": age.tolist(), "camera": camera.tolist()}


def scores_with_groups(path: Path, seed: int) -> Path:
    """Synthetic scores whose race-1 women every model scores as more male (a planted FAR gap)."""
    labels, probs = labeled(N_ROWS, seed)
    kept = groups_of(labels, seed)
    shifted = (np.array(kept["race"], dtype=object) == "1") & (labels == "female")
    for name, p in probs.items():
        z = np.log(p / (1 - p)) + 1.5 * shifted
        probs[name] = (1 / (1 + np.exp(-z))).astype(np.float32)
    return write_scores(path, labels, probs, kept=kept)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("groups_cli")
    val = scores_with_groups(root / "val.parquet", seed=21)
    test = scores_with_groups(root / "test.parquet", seed=22)
    args = ["tune", "--scores", val, "--method", "logit", "--objective", "far=0.05"]
    args += ["--out", root / "ensemble.json", "--n-boot", "200"]
    assert run_cli(cli, "genderscore ensemble", [str(a) for a in args]) == 0
    return {"root": root, "val": val, "test": test, "ensemble": root / "ensemble.json"}


def test_evaluate_by_group_prints_writes_and_reports(files, capsys):
    out, report = files["root"] / "groups.json", files["root"] / "groups_report"
    code, stdout, err = run(
        capsys, "evaluate", "--ensemble", files["ensemble"], "--scores", files["test"],
        "--group-by", "race", "--group-by", "age", "--bands", BANDS, "--group-by", "camera",
        "--n-boot", "400", "--out", out, "--report", report,
    )  # fmt: skip
    assert code == 0, err
    for text in ("by race: each model at its threshold", "gaps by race", "by age", "by camera"):
        assert text in stdout
    assert "groups under 30 rows (5) are pooled into 'other' (10 rows)" in stdout
    assert re.search(r"│ ensemble │ other \* ", stdout) and "│ missing " in stdout
    assert "n/a (one class)" in stdout and "studio: one class only" in stdout
    by = json.loads(out.read_text())["groups"]["by"]
    assert by["race"]["groups"] == ["0", "1", "2", "3", "other", "missing"]
    assert by["race"]["sizes"]["missing"] == 40 and by["race"]["pooled"] == ["5"]
    assert by["age"]["groups"][:4] == ["[0, 18)", "[18, 40)", "[40, 60)", "[60, 200)"]
    assert by["age"]["bands"] == [0, 18, 40, 60, 200]
    # the planted gap: found for the ensemble and for every member, named, CI above 0
    assert list(by["race"]["tables"]) == ["ensemble", "mnv2", "rn50", "effb0"]
    for name in ("ensemble", "mnv2"):
        gap = by["race"]["tables"][name]["gaps"]["far"]
        assert gap["worst"] == "1" and gap["excludes_zero"], (name, gap)
    assert by["camera"]["groups"] == ["phone", "studio", "web"]
    studio = by["camera"]["tables"]["ensemble"]["groups"][1]
    assert studio["one_class"] and studio["n_negative"] == 0
    assert studio["auc"]["estimate"] is None and studio["far"]["estimate"] is None
    # members are audited at the threshold each got on validation
    tuned = EnsembleSpec.load(files["ensemble"]).content["validation"]["models"]
    assert by["race"]["tables"]["rn50"]["threshold"] == tuned["rn50"]["threshold"]
    page = (report / "index.html").read_text()
    for png in ("groups_race.png", "det_race.png", "groups_age.png", "groups_camera.png"):
        assert (report / png).stat().st_size > 5000 and f'src="{png}"' in page
    assert "Gaps by race: worst minus best group" in page


def test_tune_meets_the_objective_within_a_gap_ceiling(files, capsys, tmp_path):
    out = tmp_path / "fair.json"
    code, stdout, err = run(
        capsys, "tune", "--scores", files["val"], "--method", "logit", "--objective",
        "far=0.05", "--group-by", "race", "--max-gap", "far=0.04", "--n-boot", "200",
        "--out", out, "--report", tmp_path / "report",
    )  # fmt: skip
    assert code == 0, err
    assert "with FAR gap <= 0.04" in stdout and "gaps by race" in stdout
    spec = EnsembleSpec.load(out)
    val = spec.content["validation"]
    assert spec.content["max_gap"]["rate"] == "far" and spec.content["max_gap"]["limit"] == 0.04
    constraint = val["gap_constraint"]
    assert constraint["gaps"]["race"] <= 0.04 < constraint["unconstrained"]["gaps"]["race"]
    # recomputed from the scores at the written threshold: every race group's FAR within 0.04
    table = val["groups"]["by"]["race"]["tables"]["ensemble"]
    assert table["threshold"] == spec.threshold
    fars = [r["far"]["estimate"] for r in table["groups"] if r["in_gaps"]]
    assert max(fars) - min(fars) <= 0.04
    assert val["ensemble"]["metrics"]["far"] <= 0.05
    free = EnsembleSpec.load(files["ensemble"])
    assert spec.threshold > free.threshold  # the race-1 women cost a stricter threshold
    assert "gap ceiling (on validation)" in (tmp_path / "report" / "index.html").read_text()
    # evaluate says whether the ceiling held on data the threshold never saw
    code, stdout, err = run(
        capsys, "evaluate", "--ensemble", out, "--scores", files["test"], "--group-by", "race",
        "--n-boot", "200", "--out", tmp_path / "m.json",
    )  # fmt: skip
    assert code == 0, err
    check = json.loads((tmp_path / "m.json").read_text())["gap_target"]
    race = check["by"]["race"]
    assert check["max_gap"] == "far=0.04" and race["validation"] == constraint["gaps"]["race"]
    assert race["held"] == (race["gap"] <= 0.04)
    verdict = "held" if race["held"] else "MISSED"
    assert (
        f"gap ceiling far=0.04 (set on validation): race {verdict} ({race['gap']:.4f} here"
        in stdout
    )


def test_tune_says_when_no_threshold_meets_the_ceiling(files, capsys, tmp_path):
    line = one_line_error(
        capsys, "tune", "--scores", files["val"], "--method", "logit", "--objective", "frr=0",
        "--group-by", "race", "--max-gap", "far=0", "--out", tmp_path / "e.json",
    )  # fmt: skip
    # keeping every man accepts almost every woman; some race's women are all accepted
    # sooner than another's, so the FAR gap never reaches 0
    assert re.search(
        r"no threshold meets frr=0 with a FAR gap <= 0 between race groups on validation: "
        r"the smallest gap reachable among thresholds meeting frr=0 is 0\.0\d{3}; raise --max-gap",
        line,
    ), line
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--group-by", "height"], r"has no column 'height' to group by \(its columns: row, id, path, status, .*race, age, camera\); score with 'genderscore scoring run --keep-columns height'"),
        (["--group-by", "age", "--bands", "age=0,40,18"], r"--bands age=0,40,18: edges must be increasing, but 18 follows 40"),
        (["--group-by", "camera", "--bands", "camera=0,1"], r"column 'camera' holds '\w+', not a number: --bands needs a numeric column"),
        (["--group-by", "age"], r"column 'age' holds 94 different numbers: band it with --bands age=EDGES"),
        (["--bands", "age=0,1"], r"'age' is not grouped by; add --group-by age"),
        (["--group-by", "race", "--min-group", "0"], r"--min-group must be a whole number of rows >= 1"),
    ],
)  # fmt: skip
def test_evaluate_bad_group_input_is_one_line(files, capsys, tmp_path, args, match):
    line = one_line_error(
        capsys, "evaluate", "--ensemble", files["ensemble"], "--scores", files["test"], *args,
        "--out", tmp_path / "m.json",
    )  # fmt: skip
    assert re.search(match, line), line
    assert not (tmp_path / "m.json").exists()


def test_tune_bad_gap_arguments_are_one_line(files, capsys, tmp_path):
    base = ["tune", "--scores", files["val"], "--out", tmp_path / "e.json"]
    line = one_line_error(capsys, *base, "--max-gap", "far=0.1")
    assert "--max-gap needs --group-by COLUMN" in line
    line = one_line_error(capsys, *base, "--group-by", "race", "--max-gap", "eer=0.1")
    assert "--max-gap 'eer=0.1': use far=X or frr=X" in line
    # with --manifest, a missing group column is said before anything is scored
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.jpg,male\n")
    line = one_line_error(
        capsys, "tune", "--manifest", manifest, "--models", tmp_path / "a.onnx", "--group-by",
        "race", "--out", tmp_path / "e.json",
    )  # fmt: skip
    assert re.search(
        r"--group-by race: manifest .*m\.csv has no such column \(its columns: path, label\)", line
    )
    assert not (tmp_path / "e.json").exists()
