"""The scorer's pieces without Ray: decoding with codes, --root, the worker plan, the output
folder (exactly-once check, dedupe, commit, lock) and model checks."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.errors import DataError, GenderscoreError, UsageError
from models.framing import Framing
from models.imageio import load_image
from scoring.decode import (
    decode_batch,
    decode_paths,
    image_column,
    normalise_root,
    unique_requests,
    within_root,
)
from scoring.internal.cluster import plan_workers
from scoring.layout import SUCCESS, RunLayout, verify_parts
from scoring.modelset import load_models
from scoring.options import ScoringOptions, check_options


def test_decode_once_per_size_with_codes(corpus):
    paths = [corpus.good_paths[0], str(corpus.folder / "missing.jpg"), ""]
    off = Framing()
    requests = [((32, 32), off), (48, off), ((32, 32), off)]
    out = decode_paths(paths, requests, root=normalise_root(corpus.folder))
    assert out.ok.tolist() == [True, False, False]
    assert out.codes == [None, "not_found", "bad_path"]
    # duplicates collapse: one column a size
    assert sorted(out.images) == [image_column((32, 32)), image_column(48)]
    np.testing.assert_array_equal(out.images[image_column(48)][0], load_image(paths[0], 48))
    assert not out.images[image_column((32, 32))][1].any()
    assert out.faces == [None, None, None]  # framing off looks for no face


def test_decode_batch_adds_status_face_and_tensor_columns(corpus):
    batch = pa.table({"row": [0, 1], "path": [corpus.good_paths[0], "/nonexistent.jpg"]})
    out = decode_batch(batch, [((40, 30), Framing())])
    assert out.column_names == [
        "row",
        "path",
        "status",
        "error_code",
        "error",
        "faces",
        "face_box",
        "face_score",
        image_column((40, 30)),
    ]
    assert out["status"].to_pylist() == ["ok", "error"]
    assert out["faces"].null_count == 2
    assert out[image_column((40, 30))].chunk(0).to_numpy().shape == (2, 40, 30, 3)


def test_root_confinement_follows_symlinks(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "secret.jpg", root / "link.jpg")
    r = normalise_root(root)
    assert within_root(str(root / "a.jpg"), r)
    assert not within_root(str(root / ".." / "secret.jpg"), r)
    assert not within_root(str(root / "link.jpg"), r)
    assert not within_root(str(tmp_path / "rootx" / "a.jpg"), r)  # a prefix is not a parent
    assert not within_root("s3://bucket/a.jpg", r)
    s3 = normalise_root("s3://bucket/imgs/")
    assert within_root("s3://bucket/imgs/a/b.jpg", s3)
    assert not within_root("s3://bucket/imgs/../other/b.jpg", s3)
    assert not within_root("s3://bucket/imgsx/b.jpg", s3)


@pytest.mark.parametrize(
    ("cpus", "workers", "threads", "largest", "want"),
    [
        (2, None, 1, 0, (2, 1, 0.5)),  # two single-thread actors, one CPU left for Ray Data
        (2, None, 2, 0, (1, 2, 1.0)),
        (16, None, 1, 0, (16, 1, 0.9375)),
        (3, 3, 1, 0, (3, 1, 0.6666)),
        (1, None, 1, 0, (1, 1, 0.0)),
        (2, None, 1, 2, (2, 1, 0.5)),  # one node: nothing to leave room for
        # several nodes: the actors of a lost largest node fit on the others
        (4, 2, 1, 2, (2, 1, 0.5)),
        (24, None, 1, 8, (24, 1, 0.625)),
        (3, 2, 1, 2, (2, 1, 1.0)),  # 1 + 2 CPUs: no room can be left (tested on a cluster)
    ],
)
def test_worker_plan_leaves_a_cpu_for_ray_data_and_room_for_a_lost_node(
    cpus, workers, threads, largest, want
):
    plan = plan_workers(cpus, workers, threads, largest)
    assert (plan.workers, plan.threads, plan.actor_cpus) == want
    assert plan.workers * plan.actor_cpus <= max(0, cpus - 1)
    if 0 < largest < cpus - 1:
        assert plan.workers * plan.actor_cpus <= cpus - largest - 1


def test_option_checks_name_the_option(tmp_path):
    def check(**kw):
        base = {"models": ["a.onnx"], "ensemble": None, "out": tmp_path / "o"}
        opts = {k: v for k, v in kw.items() if k not in base}
        base.update({k: v for k, v in kw.items() if k in base})
        return check_options(**base, options=ScoringOptions(**opts))

    assert check(keep_columns=["a,b", "c"]).keep_columns == ("a", "b", "c")
    with pytest.raises(UsageError, match="--batch-size must be a positive"):
        check(batch_size=0)
    with pytest.raises(UsageError, match="--num-workers"):
        check(num_workers=-1)
    with pytest.raises(UsageError, match="not both"):
        check(ensemble="e.json")
    with pytest.raises(UsageError, match="--root .* is not a folder"):
        check(root=str(tmp_path / "nope"))


def _part(path, rows, tag="x"):
    pq.write_table(pa.table({"row": pa.array(rows, pa.int64()), "v": [tag] * len(rows)}), path)


def test_verify_parts_removes_duplicates_and_finds_gaps(tmp_path):
    _part(tmp_path / "part-a.parquet", [0, 1, 2])
    _part(tmp_path / "part-b.parquet", [3, 1, 4, 4], "b")
    _part(tmp_path / "part-c.parquet", [2])
    parts = sorted(tmp_path.glob("part-*.parquet"))
    check = verify_parts(parts, 5)
    assert check.duplicates_removed == 3
    assert check.files == [str(tmp_path / "part-a.parquet"), str(tmp_path / "part-b.parquet")]
    assert pq.read_table(tmp_path / "part-b.parquet")["row"].to_pylist() == [3, 4]
    with pytest.raises(GenderscoreError, match="1 of 6 manifest rows have no output.*row 5"):
        verify_parts(sorted(tmp_path.glob("part-*.parquet")), 6)
    with pytest.raises(GenderscoreError, match="outside the manifest"):
        verify_parts(sorted(tmp_path.glob("part-*.parquet")), 4)


def test_layout_commit_is_one_rename_and_refuses_foreign_folders(tmp_path):
    layout = RunLayout(tmp_path / "run_date=2026-01-02")
    assert layout.staging.name.startswith(".")  # skipped by dataset readers
    layout.reset()
    _part(layout.parts / "part-1.parquet", [0, 1])
    (layout.parts / "part-2.parquet").write_bytes(b"PAR1 half written")
    assert layout.done_rows().tolist() == [0, 1]
    assert not (layout.parts / "part-2.parquet").exists()
    layout.commit({"rows": 2})
    assert layout.committed and (layout.final / SUCCESS).is_file()
    assert not layout.staging.exists()
    assert layout.committed_summary() == {"rows": 2}
    with pytest.raises(UsageError, match="object storage"):
        RunLayout("s3://bucket/out")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a committed scoring output"):
        RunLayout(foreign).check_out_free()


def test_one_run_per_output_at_a_time(tmp_path):
    import subprocess
    import sys

    layout = RunLayout(tmp_path / "out")
    code = (
        "import sys\nfrom scoring.layout import RunLayout\n"
        f"with RunLayout({str(tmp_path / 'out')!r}).locked():\n    pass\n"
    )
    with layout.locked():
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "another run is writing" in proc.stderr
    with layout.locked():  # released
        pass


def test_models_are_checked_on_the_driver(onnx_models, tmp_path):
    paths = list(onnx_models.values())
    refs = load_models(paths)
    assert [r.name for r in refs] == list(onnx_models)
    assert refs[0].input_size == (48, 48) and len(refs[0].sha256) == 64
    with pytest.raises(UsageError, match="two models are named"):
        load_models([paths[0], paths[0]])
    with pytest.raises(UsageError, match="does not exist"):
        load_models([tmp_path / "none.onnx"])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(DataError, match="not an ONNX model"):
        load_models([junk])
    proto = onnx.load(paths[0])
    proto.graph.output[0].name, proto.graph.output[1].name = "logit", "prob"
    swapped = tmp_path / "swapped.onnx"
    onnx.save(proto, swapped)
    with pytest.raises(DataError, match="first output must be 'prob'"):
        load_models([swapped])


def test_the_scorer_reads_and_decodes_rows_of_paths_itself(corpus, onnx_models):
    """The scorer actor turns rows of paths into the scores its sessions give the same rows
    decoded beforehand, error rows included."""
    from scoring.modelset import read_model_bytes
    from scoring.onnx_scorer import OnnxScorer, output_schema, score_table

    refs = load_models([onnx_models["mobilenetv2"]])
    good = corpus.good_paths
    batch = pa.table(
        {
            "row": pa.array([0, 1, 2], pa.int64()),
            "id": pa.array([None, None, None], pa.string()),
            "path": [good[0], str(corpus.folder / "missing.jpg"), good[1]],
        }
    )
    schema = output_schema(batch.schema, refs, ensemble=False)
    requests = unique_requests([(r.input_size, r.framing) for r in refs])
    models = [(r, read_model_bytes(r)) for r in refs]
    scorer = OnnxScorer(models, 1, schema, decode={"requests": requests})
    fused = scorer(batch)
    decoded_first = score_table(
        decode_batch(batch, requests), refs, scorer.sessions_, scorer.schema_
    )
    assert fused.equals(decoded_first)
    assert fused["status"].to_pylist() == ["ok", "error", "ok"]
    assert fused["error_code"].to_pylist() == [None, "not_found", None]
    p = fused[refs[0].column].to_pylist()
    assert p[1] is None and 0.0 <= p[0] <= 1.0 and 0.0 <= p[2] <= 1.0


def test_a_run_sets_ray_datas_context_quietly_and_puts_it_back():
    """Small blocks of paths, no actor locality, none of the deprecation warnings Ray shows
    users on every run; the caller's settings come back afterwards."""
    import warnings

    from ray.data import DataContext
    from ray.util.annotations import RayDeprecationWarning

    from scoring.run import BATCHES_PER_BLOCK, _data_context

    ctx = DataContext.get_current()
    before = (ctx.target_max_block_size, ctx.execution_options.actor_locality_enabled)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with _data_context(ScoringOptions(batch_size=16), row_bytes=100):
            ctx = DataContext.get_current()
            assert ctx.target_max_block_size == BATCHES_PER_BLOCK * 16 * 100
            assert ctx.execution_options.actor_locality_enabled is False
    assert not [w for w in seen if issubclass(w.category, RayDeprecationWarning)]
    ctx = DataContext.get_current()
    assert (ctx.target_max_block_size, ctx.execution_options.actor_locality_enabled) == before
