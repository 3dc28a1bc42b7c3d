"""Reading scoring's Parquet output: folders of parts, metadata checks, orientation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ens_support import labeled, model_meta, write_scores

from ensemble.scores import labeled_scores, read_scores
from models.errors import DataError


def test_a_folder_of_parts_is_one_run_and_hidden_staging_is_skipped(tmp_path):
    labels, probs = labeled(40, seed=1)
    half = {k: v[:20] for k, v in probs.items()}
    rest = {k: v[20:] for k, v in probs.items()}
    write_scores(tmp_path / "out" / "part-0.parquet", labels[:20], half)
    write_scores(tmp_path / "out" / "part-1.parquet", labels[20:], rest)
    write_scores(tmp_path / "out" / ".staging" / "part-9.parquet", labels[:20], half)
    data = labeled_scores(read_scores(tmp_path / "out"), "male")
    assert len(data.y) == 40
    np.testing.assert_array_equal(data.raw["mnv2"], probs["mnv2"])


def test_parts_from_other_models_are_refused(tmp_path):
    labels, probs = labeled(20, seed=1)
    write_scores(tmp_path / "out" / "part-0.parquet", labels, probs)
    models = [model_meta(n) for n in probs]
    models[0]["sha256"] = "1" * 64
    write_scores(tmp_path / "out" / "part-1.parquet", labels, probs, models=models)
    with pytest.raises(DataError, match="was scored with other models"):
        read_scores(tmp_path / "out")


def test_a_model_with_the_other_positive_class_is_flipped(tmp_path):
    labels, probs = labeled(30, seed=2)
    models = [model_meta(n) for n in probs]
    models[1]["positive_class"] = "female"
    flipped = dict(probs, rn50=1 - probs["rn50"])
    path = write_scores(tmp_path / "s.parquet", labels, flipped, models=models)
    data = labeled_scores(read_scores(path), "male")
    np.testing.assert_allclose(data.X[:, 1], probs["rn50"], atol=1e-6)
    np.testing.assert_array_equal(data.raw["rn50"], flipped["rn50"].astype(np.float32))


def test_files_that_are_not_scoring_output(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_scores(tmp_path / "nope.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_scores(tmp_path / "text.parquet")
    pq.write_table(pa.table({"status": ["ok"], "p_a": [0.5]}), tmp_path / "plain.parquet")
    with pytest.raises(DataError, match="no 'genderscore' Parquet metadata"):
        read_scores(tmp_path / "plain.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .parquet files"):
        read_scores(tmp_path / "empty")
