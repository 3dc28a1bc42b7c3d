"""``genderscore demo`` for real, through the root command: synthetic images -> trained
backbones -> ONNX -> Ray scoring -> tuned ensemble -> scored manifest, at the smallest
settings that still run every step; a real image folder with --data; reruns; bad options."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from convert.metadata import read_metadata
from ensemble.app import cli
from ensemble.demo_run import MARKER, DemoConfig, run_demo
from models.cli_support import run_cli
from models.errors import UsageError
from models.synthetic import write_synthetic_dataset
from scoring.ensemble_spec import EnsembleSpec

#: Every step runs; 8 training images per class at 32 px, one epoch (10 val, 10 test).
SMALL = ["--images", "8", "--image-size", "32", "--epochs", "1", "--batch-size", "8"]
SMALL += ["--n-boot", "100"]
#: An ensemble of two keeps every step and costs half of the default three (each backbone is
#: trained and converted on its own in tests/models and tests/convert).
TWO = ["mobilenetv2", "resnet50"]
STEPS = ["data"] + [f"train {b}" for b in TWO] + [f"convert {b}" for b in TWO]
STEPS += ["score val", "tune", "manifest", "score manifest", "evaluate"]


@pytest.fixture(scope="module")
def ray_once():
    """One local Ray for every demo run below (the demo starts its own only if none runs)."""
    import ray

    started = not ray.is_initialized()
    if started:
        # Workers' own lines are not forwarded: the demo's output is checked line by line.
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def demo(args: list[str], capsys) -> tuple[int, str, str]:
    code = run_cli(cli, "genderscore", ["demo", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def manifest_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def check_outputs(out: Path, backbones: list[str]) -> dict:
    """Everything the README promises in OUT exists and agrees; returns demo.json."""
    record = json.loads((out / "demo.json").read_text())
    rows = manifest_rows(out / "manifest.csv")
    files = sorted((out / "scores").glob("*.parquet"))
    table = pq.read_table(files)
    assert (out / "scores" / "_SUCCESS").exists()
    assert table.num_rows == len(rows) > 0
    assert sorted(table.column("row").to_pylist()) == list(range(len(rows)))
    assert table.column("true_label").to_pylist() == [
        rows[i]["label"] for i in table.column("row").to_pylist()
    ]
    summary = json.loads((out / "scores" / "_summary.json").read_text())
    assert summary["rows"] == summary["rows_scored"] == len(rows)
    assert summary["rows_by_status"] == {"ok": len(rows)}
    spec = EnsembleSpec.load(out / "ensemble.json")
    assert [m.name for m in spec.models] == backbones
    assert set(table.column("ensemble_version").to_pylist()) == {spec.version}
    assert set(table.column("label").to_pylist()) <= set(spec.class_names)
    val_rows = manifest_rows(out / "data" / "val.csv")
    assert spec.content["validation"]["rows"]["used"] == len(val_rows)
    assert pq.read_table(sorted((out / "val_scores").glob("*.parquet"))).num_rows == len(val_rows)
    assert (out / "report" / "index.html").is_file() and (out / "report" / "roc.png").is_file()
    for b in backbones:
        meta = read_metadata(out / "models" / f"{b}.onnx")
        assert meta.backbone == b and meta.input_size == (32, 32)
        assert (out / "runs" / b / "run.json").is_file()
    figures = record["figures"]
    assert figures["rows_scored"] == len(rows) and figures["images_per_s"] > 0
    assert set(figures["val_auc"]) == {*backbones, "ensemble"}
    assert figures["threshold"] == spec.threshold
    assert [s["title"] for s in record["steps"]] == [
        t for t in STEPS if not t.startswith(("train ", "convert ")) or t.split()[1] in backbones
    ]
    return record


@pytest.mark.slow  # runs the demo: trains two backbones
def test_demo_runs_every_step_and_refuses_to_overwrite_itself(ray_once, tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = demo(["--out", str(out), "--backbones", ",".join(TWO), *SMALL], capsys)
    assert code == 0, err
    assert "SYNTHETIC" in stdout.splitlines()[0]
    for i, title in enumerate(STEPS, start=1):
        line = rf"^\[\s*{i}/{len(STEPS)}\] {title} \.\.\. .*\(\d+\.\d s\)$"
        assert re.search(line, stdout, re.M), stdout
    for where in ("report/index.html", "scores", "scores/_summary.json"):
        assert str(out / where) in stdout
    record = check_outputs(out, TWO)
    assert record["synthetic"] is True
    assert record["data"]["counts"] == {
        "train": {"female": 8, "male": 8},
        "val": {"female": 10, "male": 10},
        "test": {"female": 10, "male": 10},
    }
    # The synthetic images live in OUT, so the manifest's paths are relative to it.
    assert all(r["path"].startswith("data/test/") for r in manifest_rows(out / "manifest.csv"))

    # Run again into the same folder: refused in one line, nothing touched.
    before = (out / "demo.json").read_bytes()
    code, _, err = demo(["--out", str(out), "--backbones", ",".join(TWO), *SMALL], capsys)
    assert code == 2
    assert re.fullmatch(
        r"genderscore: error: --out \S+ already holds a demo: pass --force to start afresh "
        r"there, or choose another --out\n",
        err,
    )
    assert (out / "demo.json").read_bytes() == before


@pytest.mark.slow  # runs the demo: trains one backbone
def test_data_uses_a_real_folder_and_force_starts_afresh(ray_once, tmp_path, capsys):
    faces = tmp_path / "faces"  # real PNG files, train/ and val/ only: the demo splits val
    write_synthetic_dataset(
        faces, 12, splits=("train", "val"), size=(40, 40), fmt="png", with_csv=False, seed=3
    )
    out = tmp_path / "demo"
    out.mkdir()
    (out / MARKER).write_text("a previous demo\n")
    (out / "stale.txt").write_text("from the previous demo\n")
    backbones = ["mobilenetv2"]  # an ensemble of one: the first test trains two
    args = ["--out", str(out), "--data", str(faces), "--force", "--backbones", ",".join(backbones)]
    code, stdout, err = demo([*args, *SMALL], capsys)
    assert code == 0, err
    assert "SYNTHETIC" not in stdout and str(faces) in stdout.splitlines()[0]
    assert not (out / "stale.txt").exists()
    record = check_outputs(out, backbones)
    assert record["synthetic"] is False and record["data"]["source"] == str(faces)
    # 8 of 12 training images per class; val's 12 per class split into two halves of 6
    assert record["data"]["counts"] == {
        "train": {"female": 8, "male": 8},
        "val": {"female": 6, "male": 6},
        "test": {"female": 6, "male": 6},
    }
    rows = manifest_rows(out / "manifest.csv")
    val = {r["path"] for r in manifest_rows(out / "data" / "val.csv")}
    assert all(r["path"].startswith(str(faces / "val")) for r in rows)
    assert not val & {r["path"] for r in rows}  # tuned and scored on different images
    assert not list((out / "data").rglob("*.png"))  # listed, never copied


def test_a_folder_that_is_not_a_demo_is_never_replaced(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    code, _, err = demo(["--out", str(out), "--force", *SMALL], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "is not empty and holds no demo" in err
    assert (out / "notes.txt").read_text() == "keep me\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-size", "16"], r"--image-size must be between 32 and 224 px, got 16"),
        (["--backbones", "mobilenetv2,vgg16"], r"--backbones mobilenetv2,vgg16: each of"),
        (["--objective", "far"], r"objective far needs a target rate"),
        (["--data", "no/such/folder"], r"--data no/such/folder is not a folder"),
    ],
)
def test_a_bad_option_is_one_line_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "demo"
    code, stdout, err = demo(["--out", str(out), *args], capsys)
    assert code == 2 and stdout == ""
    assert len(err.splitlines()) == 1 and re.match(rf"genderscore: error: {message}", err)
    assert not out.exists()
    with pytest.raises(UsageError, match=message):
        run_demo(DemoConfig(out=out, **_config(args)))


def _config(args: list[str]) -> dict:
    name, value = args[0].lstrip("-").replace("-", "_"), args[1]
    if name == "image_size":
        return {name: int(value)}
    if name == "backbones":
        return {name: tuple(value.split(","))}
    if name == "data":
        return {name: Path(value)}
    return {name: value}
