"""The ensemble on real scores: converted ONNX models score the synthetic faces on Ray
(``ensemble tune --manifest``), then ``ensemble apply`` and ``ensemble evaluate`` on them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from ensemble.cli import cli
from models.cli_support import run_cli
from scoring.ensemble_spec import EnsembleSpec


@pytest.fixture(scope="module")
def ray_once():
    """One local Ray for both scoring runs below (each run would otherwise start its own)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow  # a local Ray scores the manifest twice
def test_tune_from_a_manifest_then_apply_and_evaluate(
    ray_once, onnx_models, synthetic_dir, tmp_path, capsys
):
    models = [str(onnx_models[name]) for name in sorted(onnx_models)]
    # a manifest column to group by: tune --manifest keeps it in the scores
    # (paths made absolute: relative ones resolve against the manifest's own folder)
    rows = [r.split(",") for r in (synthetic_dir / "val.csv").read_text().splitlines()[1:]]
    sites = [("north", "south")[i % 2] for i in range(len(rows))]
    manifest = tmp_path / "val_sites.csv"
    manifest.write_text(
        "path,label,site\n"
        + "".join(
            f"{synthetic_dir / p},{lab},{s}\n" for (p, lab), s in zip(rows, sites, strict=True)
        )
    )
    args = ["tune", "--manifest", str(manifest), "--root", str(synthetic_dir)]
    for m in models:
        args += ["--models", m]
    args += ["--method", "auto", "--objective", "eer", "--out", str(tmp_path / "ensemble.json")]
    args += ["--n-boot", "200", "--report", str(tmp_path / "report")]
    args += ["--group-by", "site", "--min-group", "10"]
    assert run_cli(cli, "genderscore ensemble", args) == 0, capsys.readouterr().err
    spec = EnsembleSpec.load(tmp_path / "ensemble.json")
    assert sorted(m.name for m in spec.models) == sorted(onnx_models)
    for m in spec.models:
        assert m.path == str(onnx_models[m.name]) and len(m.sha256) == 64
    val = spec.content["validation"]
    assert val["rows"]["used"] == 48 and val["fingerprint"]["label_counts"] == {
        "female": 24,
        "male": 24,
    }
    # the fixture's models track the labels: the ensemble is better than chance
    assert val["ensemble"]["roc_auc"] > 0.7
    assert val["groups"]["by"]["site"]["sizes"] == {"north": 24, "south": 24}
    scores = tmp_path / "ensemble.scores"
    assert (scores / "_SUCCESS").exists()

    out = tmp_path / "decided.parquet"
    args = ["apply", "--ensemble", str(tmp_path / "ensemble.json"), "--scores", str(scores)]
    assert run_cli(cli, "genderscore ensemble", [*args, "--out", str(out)]) == 0
    decided = pq.read_table(out)
    assert decided.num_rows == 48 and decided.column("label").null_count == 0
    meta = json.loads(decided.schema.metadata[b"genderscore"])
    assert meta["ensemble_version"] == spec.version
    args = ["evaluate", "--ensemble", str(tmp_path / "ensemble.json"), "--scores", str(scores)]
    args += ["--group-by", "site", "--min-group", "10"]
    assert run_cli(cli, "genderscore ensemble", [*args, "--n-boot", "200"]) == 0
    printed = capsys.readouterr().out
    assert "objective eer:" in printed and "gaps by site" in printed

    # `scoring run --ensemble` applies the same code: same probabilities, same decisions
    from scoring.run import score_manifest

    result = score_manifest(
        synthetic_dir / "val.csv",
        ensemble=tmp_path / "ensemble.json",
        out=tmp_path / "scored_with_ensemble",
        root=str(synthetic_dir),
        progress=False,
    )
    direct = pq.read_table(result.parquet_files).to_pandas().set_index("path").sort_index()
    applied = decided.to_pandas().set_index("path").sort_index()
    assert (direct["ensemble_version"] == spec.version).all()
    np.testing.assert_array_equal(direct["p_ensemble"], applied["p_ensemble"])
    assert (direct["label"] == applied["label"]).all()
