"""benchmarks/reference_results.py end to end on tiny synthetic faces, so the recipe that
produces the reference results in docs/benchmarks.md cannot rot: every stage, then a rerun that resumes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from models.synthetic import write_synthetic_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_results.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("reference_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_reference_recipe_runs_every_stage_and_resumes(recipe, tmp_path):
    data = tmp_path / "data"
    # The layout of ../shared/data: UTKFace train/val, FACECOM train only (a different size).
    write_synthetic_dataset(data / "utkface", n_per_class=16, size=(48, 48), seed=1)
    write_synthetic_dataset(data / "facecom", n_per_class=10, splits=("train",), size=(60, 60))
    work = tmp_path / "work"
    args = [
        "--data", str(data), "--work", str(work), "--backbones", "mobilenetv2",
        "--size", "32", "--epochs", "1", "--batch-size", "16", "--calibration-count", "16",
        "--n-boot", "100", "--verbose", "0",
        "--no-int8",  # INT8 conversion and its comparison cost more than the rest together
    ]  # fmt: skip
    assert recipe.main(args) == 0

    counts = json.loads((work / "manifests" / "counts.json").read_text())
    assert counts["crossdomain"] == {"female": 3, "male": 3}  # 30% of each FACECOM class
    assert counts["train"] == {"female": 16 + 7, "male": 16 + 7}
    held_out = (work / "manifests" / "crossdomain.csv").read_text()
    assert all(line.split(",")[0] not in held_out for line in
               (work / "manifests" / "train.csv").read_text().splitlines()[1:])  # fmt: skip

    results = json.loads((work / "results.json").read_text())
    assert set(results["objectives"]) == {"far=0.05", "eer"}
    for res in results["objectives"].values():
        assert set(res["rows"]) == {"mobilenetv2", "ensemble"}
        for rows in res["rows"].values():
            assert rows["val"]["n"] == 32 and rows["crossdomain"]["n"] == 6
            assert 0.0 <= rows["crossdomain"]["macro_f1"] <= 1.0
    assert results["training"]["mobilenetv2"]["image_size"] == [32, 32]
    assert results["training"]["mobilenetv2"]["epochs_run"] == 1
    assert results["int8_decisions"] == {} and "int8" not in results
    assert not (work / "onnx" / "mobilenetv2_int8.onnx").exists()

    table = (work / "results.md").read_text()
    assert "| **ensemble** | FACECOM held out |" in table
    assert "| mobilenetv2 | 32 px | 1 (1) |" in table

    # A rerun finds every stage's outputs and keeps them.
    model = work / "onnx" / "mobilenetv2.onnx"
    before = model.stat().st_mtime_ns, (work / "ensemble" / "eer.json").read_text()
    assert recipe.main([*args, "train", "convert", "score", "tune"]) == 0
    assert (model.stat().st_mtime_ns, (work / "ensemble" / "eer.json").read_text()) == before
