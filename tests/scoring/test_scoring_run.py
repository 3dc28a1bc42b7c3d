"""The scorer end to end on a real local Ray: every manifest row exactly once, stable error
codes, probabilities equal to a direct single-process ONNX Runtime run, ensembles, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from convert.metadata import read_metadata
from models.cli_support import run_cli
from models.errors import DataError, GenderscoreError, UsageError
from models.imageio import load_image
from scoring.cli import cli
from scoring.ensemble_spec import EnsembleSpec
from scoring.layout import SUCCESS, SUMMARY, RunLayout, RunState
from scoring.run import score_manifest


def direct_probs(model: str, paths: list[str]) -> np.ndarray:
    """P(positive) from a plain ORT session, one image at a time, default session options."""
    size = read_metadata(model).input_size
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.array(
        [session.run(["prob"], {"image": load_image(p, size)[None]})[0][0] for p in paths],
        dtype=np.float32,
    )


def read_out(out: Path) -> pa.Table:
    return pq.read_table(sorted(out.glob("part-*.parquet"))).sort_by("row")


@pytest.fixture(scope="module")
def scored(ray_local, corpus, model_paths, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored") / "out"
    result = score_manifest(
        corpus.manifest,
        models=model_paths,
        out=out,
        keep_columns="note",
        root=corpus.folder,
        batch_size=4,
        progress=False,
    )
    return result


def test_every_manifest_row_once_with_its_code(scored, corpus):
    table = read_out(scored.out)
    assert table.column("row").to_pylist() == list(range(len(corpus.expected)))
    got = list(zip(table["status"].to_pylist(), table["error_code"].to_pylist(), strict=True))
    assert got == corpus.expected
    errors = table.filter(pa.compute.equal(table["status"], "error"))
    assert all(errors["error"].to_pylist())
    assert errors["p_mobilenetv2"].null_count == errors.num_rows


def test_probabilities_equal_a_direct_ort_run(scored, corpus, onnx_models):
    table = read_out(scored.out)
    rows = sorted(corpus.good_paths)
    paths = [corpus.good_paths[r] for r in rows]
    for name, model in onnx_models.items():
        got = table[f"p_{name}"].to_numpy(zero_copy_only=False)[rows].astype(np.float32)
        want = direct_probs(str(model), paths)
        assert table.schema.field(f"p_{name}").type == pa.float32()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        assert np.ptp(want) > 1e-3  # the models' outputs vary, so the comparison means something


def test_output_columns_metadata_and_summary(scored, corpus, onnx_models):
    table = read_out(scored.out)
    names = list(onnx_models)
    assert table.column_names == [
        "row", "id", "path", "status", "error_code", "error", "faces", "face_box", "face_score",
        *[f"p_{n}" for n in names], "true_label", "note",
    ]  # fmt: skip
    assert table["faces"].null_count == table.num_rows  # framing off: no face looked for
    assert table["id"][0].as_py() == "images/rgb.jpg"  # the path as the manifest spells it
    assert table["path"][0].as_py() == str(corpus.folder / "rgb.jpg")
    assert table["path"][3].as_py() == str(corpus.folder / "rgba.png")  # file:// made local
    assert table["true_label"].to_pylist()[:2] == ["female", "male"]
    assert table["note"][5].as_py() == "note 5"
    meta = json.loads(pq.read_schema(scored.parquet_files[0]).metadata[b"genderscore"])
    assert [m["name"] for m in meta["models"]] == names
    assert meta["run_id"] == scored.summary["run_id"] and meta["ensemble_version"] is None
    assert all(len(m["sha256"]) == 64 for m in meta["models"])
    assert (scored.out / SUCCESS).is_file()
    summary = json.loads((scored.out / SUMMARY).read_text())
    n_bad = sum(s == "error" for s, _ in corpus.expected)
    assert summary["rows"] == len(corpus.expected)
    assert summary["rows_by_status"] == {"error": n_bad, "ok": len(corpus.expected) - n_bad}
    assert summary["errors_by_code"]["outside_root"] == 1
    assert len(summary["error_samples"]) == n_bad
    assert summary["manifest_sha256"] and summary["images_per_s"] > 0
    assert not RunLayout(scored.out).staging.exists()


def test_rerun_of_a_committed_output_is_a_no_op(scored, corpus, model_paths):
    before = sorted(p.stat().st_mtime_ns for p in scored.out.iterdir())
    again = score_manifest(
        corpus.manifest, models=model_paths, out=scored.out, keep_columns=["note"],
        root=corpus.folder, progress=False,
    )  # fmt: skip
    assert again.skipped and again.summary["run_id"] == scored.summary["run_id"]
    assert sorted(p.stat().st_mtime_ns for p in scored.out.iterdir()) == before
    with pytest.raises(UsageError, match="committed run of another manifest"):
        score_manifest(corpus.manifest, models=model_paths[:1], out=scored.out, progress=False)


def test_ensemble_is_applied(ray_local, scored, corpus, onnx_models, tmp_path):
    meta = json.loads(pq.read_schema(scored.parquet_files[0]).metadata[b"genderscore"])
    members = [m for m in meta["models"] if m["name"] != "resnet50"]
    spec = EnsembleSpec.build(
        {
            "class_names": ["female", "male"],
            "positive_class": "male",
            "models": members,
            "combiner": {"method": "weighted", "params": {"weights": [0.25, 0.75]}},
            "calibration": {"method": "none", "params": {}},
            "threshold": 0.5,
        }
    )
    path = spec.save(tmp_path / "ensemble.json")
    result = score_manifest(corpus.manifest, ensemble=path, out=tmp_path / "ens", progress=False)
    table = read_out(result.out)
    assert [c for c in table.column_names if c.startswith("p_")] == [
        "p_mobilenetv2", "p_efficientnetb0", "p_ensemble",
    ]  # fmt: skip
    ok = np.asarray(table["status"].to_pylist()) == "ok"
    probs = {m["name"]: table[f"p_{m['name']}"].to_numpy(zero_copy_only=False)[ok] for m in members}
    p_ens = table["p_ensemble"].to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(p_ens[ok], spec.combine(probs), atol=1e-6)
    assert np.isnan(p_ens[~ok]).all()
    assert table["label"].to_pylist() == [
        ("male" if p >= 0.5 else "female") if o else None for p, o in zip(p_ens, ok, strict=True)
    ]
    assert set(table["ensemble_version"].to_pylist()) == {spec.version}
    assert set(table["threshold"].to_pylist()) == {0.5}
    assert result.summary["ensemble_version"] == spec.version
    # without --root the outside image is just another good image
    assert table["status"].to_pylist()[-1] == "ok"


def test_ensemble_refuses_a_changed_model(ray_local, scored, corpus, tmp_path):
    meta = json.loads(pq.read_schema(scored.parquet_files[0]).metadata[b"genderscore"])
    member = dict(meta["models"][0], sha256="0" * 64)
    spec = EnsembleSpec.build(
        {
            "class_names": ["female", "male"],
            "positive_class": "male",
            "models": [member],
            "combiner": {"method": "mean", "params": {}},
            "threshold": 0.5,
        }
    )
    path = spec.save(tmp_path / "ensemble.json")
    with pytest.raises(DataError, match="changed"):
        score_manifest(corpus.manifest, ensemble=path, out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_a_crashed_run_resumes_keeping_finished_parts(
    ray_local, scored, corpus, model_paths, tmp_path
):
    """Recreate what a driver killed mid-run leaves: a staging folder of the same job with one
    finished part (rows 0-9), a half-written part and a part that repeats a row."""
    out = tmp_path / "out"
    layout = RunLayout(out)
    layout.reset()
    layout.save_state(
        RunState(job_key=scored.summary["job_key"], run_id="crashed-run", created_at="then")
    )
    done = read_out(scored.out).slice(0, 10)
    marker = pa.array(np.full(10, 0.123, np.float32))
    done = done.set_column(done.schema.get_field_index("p_resnet50"), "p_resnet50", marker)
    pq.write_table(done, layout.parts / "part-old-000000-0.parquet")
    pq.write_table(done.slice(3, 1), layout.parts / "part-old-000001-0.parquet")
    data = (layout.parts / "part-old-000000-0.parquet").read_bytes()
    (layout.parts / "part-old-000002-0.parquet").write_bytes(data[: len(data) // 2])
    result = score_manifest(
        corpus.manifest, models=model_paths, out=out, keep_columns="note",
        root=corpus.folder, progress=False,
    )  # fmt: skip
    s = result.summary
    assert s["run_id"] == "crashed-run" and s["attempts"] == 1
    assert s["rows_resumed"] == 10 and s["rows_scored"] == len(corpus.expected) - 10
    assert s["duplicates_removed"] == 1
    table = read_out(out)
    assert table.column("row").to_pylist() == list(range(len(corpus.expected)))
    kept = table["p_resnet50"].to_numpy(zero_copy_only=False)
    assert np.allclose(kept[:10][~np.isnan(kept[:10])], 0.123)  # finished work was kept
    fresh = read_out(scored.out)
    assert (
        table.slice(10)
        .select(["status", "error_code", "p_mobilenetv2"])
        .equals(fresh.slice(10).select(["status", "error_code", "p_mobilenetv2"]))
    )
    assert not layout.staging.exists()


def test_manifest_problems_fail_before_any_work(ray_local, corpus, model_paths, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="no column 'file'.*--path-column"):
        score_manifest(corpus.manifest, models=model_paths, out=out, path_column="file")
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(DataError, match="has no rows"):
        score_manifest(empty, models=model_paths, out=out)
    with pytest.raises(UsageError, match="no models: give --models"):
        score_manifest(corpus.manifest, out=out)
    with pytest.raises(UsageError, match="unknown scoring option"):
        score_manifest(corpus.manifest, models=model_paths, out=out, batchsize=3)
    assert not out.exists() and not RunLayout(out).staging.exists()


def test_cli_scores_with_several_models_and_prints_a_summary(
    ray_local, corpus, onnx_models, tmp_path, capsys
):
    shutil.copy(corpus.manifest, tmp_path / "m.csv")  # relative paths now point nowhere
    out = tmp_path / "cli"
    args = ["run", "--manifest", str(corpus.manifest), "--models",
            *[str(p) for p in onnx_models.values()], "--out", str(out),
            "--batch-size", "8", "--no-progress", "--root", str(corpus.folder),
            "--run-date", "2026-11-27"]  # fmt: skip
    assert run_cli(cli, "genderscore scoring", args) == 0
    printed = capsys.readouterr().out
    day = out / "run_date=2026-11-27"
    assert f"{len(corpus.expected)} rows -> {day}" in printed and "outside_root 1" in printed
    assert read_out(day).num_rows == len(corpus.expected)
    code = run_cli(cli, "genderscore scoring", ["run", "--manifest", str(tmp_path / "m.csv"),
                   "--out", str(out), "--batch-size", "0", "--models", "a.onnx"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--batch-size must be a positive" in err[0]


def test_an_unwritable_output_place_is_a_clear_failure(corpus, model_paths, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(GenderscoreError, match="writing .* failed.*nothing was committed"):
        score_manifest(corpus.manifest, models=model_paths, out=blocker / "out", progress=False)


def test_the_staged_rows_are_read_in_blocks_of_a_few_batches(ray_local, tmp_path):
    """Each block of the todo is one task of a scorer actor: a few batches, not the staged
    part whole (one actor's long tail) nor a row at a time."""
    from scoring.options import ScoringOptions
    from scoring.run import BATCHES_PER_BLOCK, _data_context, _staged_row_bytes

    rows = 2000
    todo = tmp_path / "todo"
    todo.mkdir()
    part = todo / "part-0.parquet"
    paths = [f"/images/{'d' * (i % 40)}/img{i}.jpg" for i in range(rows)]  # lengths vary
    pq.write_table(pa.table({"row": range(rows), "id": [None] * rows, "path": paths}), part)
    opts = ScoringOptions(batch_size=16)
    with _data_context(opts, _staged_row_bytes([part])):
        ds = ray_local.data.read_parquet(str(todo))
        sizes = ds.map_batches(
            lambda t: pa.table({"n": [t.num_rows]}), batch_size=None, batch_format="pyarrow"
        )
        blocks = sizes.take_all()
    n = [b["n"] for b in blocks]
    assert sum(n) == rows
    target = BATCHES_PER_BLOCK * opts.batch_size
    assert max(n) <= 1.5 * target and len(n) >= rows // (1.5 * target), n
