"""Manifest reading and staging, without Ray: formats, path resolution, whole-manifest errors."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.errors import DataError, UsageError
from scoring.manifest import (
    ManifestColumns,
    manifest_fingerprint,
    read_header,
    resolve_path,
    stage_manifest,
)


def staged_table(folder: Path) -> pa.Table:
    return pq.read_table(sorted(folder.glob("part-*.parquet")))


@pytest.mark.parametrize(
    ("raw", "base", "want"),
    [
        ("a/b.jpg", "/data/m", "/data/m/a/b.jpg"),
        ("../x.jpg", "/data/m", "/data/x.jpg"),
        ("/abs//y.png", "/data/m", "/abs/y.png"),
        ("file:///d/with%20space.jpg", "/data/m", "/d/with space.jpg"),
        ("s3://bucket/k.jpg", "/data/m", "s3://bucket/k.jpg"),
        ("sub/k.jpg", "s3://bucket/dir", "s3://bucket/dir/sub/k.jpg"),
        ("../k.jpg", "gs://bucket/dir", "gs://bucket/k.jpg"),
        ("   ", "/data", ""),
        (None, "/data", ""),
    ],
)
def test_resolve_path(raw, base, want):
    assert resolve_path(raw, base) == want


def test_csv_quirks_bom_crlf_quotes_blank_lines_extra_columns(tmp_path):
    text = '\ufeffpath,label,extra,note\r\n"a,b.jpg",male,1,n0\r\n\r\nc.jpg,female,2,"n,1"\r\n'
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(text.encode("utf-8"))
    staged = stage_manifest(manifest, tmp_path / "todo", ManifestColumns(keep=("note",)))
    assert staged.rows == staged.todo == 2
    assert staged.columns.label == "label"  # found without being named
    t = staged_table(tmp_path / "todo")
    assert t.column_names == ["row", "id", "path", "true_label", "note"]
    assert t["row"].to_pylist() == [0, 1]
    assert t["id"].to_pylist() == ["a,b.jpg", "c.jpg"]
    assert t["path"].to_pylist() == [str(tmp_path / "a,b.jpg"), str(tmp_path / "c.jpg")]
    assert t["note"].to_pylist() == ["n0", "n,1"]


def test_id_column_values_read_as_text_and_gzip(tmp_path):
    manifest = tmp_path / "m.csv.gz"
    manifest.write_bytes(gzip.compress(b"key,path\n007,x.jpg\n08,y.jpg\n"))
    staged = stage_manifest(manifest, tmp_path / "todo", ManifestColumns(id="key"))
    t = staged_table(tmp_path / "todo")
    assert t["id"].to_pylist() == ["007", "08"]  # never parsed as numbers
    assert staged.columns.label is None and "true_label" not in t.column_names


def test_parquet_manifest_streams_in_parts_and_skips_done_rows(tmp_path):
    n = 2500
    table = pa.table(
        {
            "path": [f"img{i}.jpg" for i in range(n)],
            "label": ["male", "female"] * (n // 2),
            "score": np.arange(n, dtype=np.int32),
        }
    )
    manifest = tmp_path / "m.parquet"
    pq.write_table(table, manifest, row_group_size=700)
    skip = np.arange(0, n, 3)
    staged = stage_manifest(
        manifest, tmp_path / "todo", ManifestColumns(keep=("score",)), skip=skip, rows_per_part=1000
    )
    assert staged.rows == n and staged.todo == n - len(skip) and len(staged.files) == 2
    t = staged_table(tmp_path / "todo")
    assert t["row"].to_pylist() == [i for i in range(n) if i % 3]
    assert t.schema.field("score").type == pa.int32()  # kept columns keep their type
    assert t["path"][0].as_py() == str(tmp_path / "img1.jpg")


def test_fingerprint_is_the_bytes(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("path\nx.jpg\n")
    b.write_text("path\nx.jpg\n")
    assert manifest_fingerprint(a) == manifest_fingerprint(b)
    b.write_text("path\ny.jpg\n")
    assert manifest_fingerprint(a) != manifest_fingerprint(b)


@pytest.mark.parametrize(
    ("content", "columns", "error", "match"),
    [
        (
            "file,label\nx.jpg,male\n",
            ManifestColumns(),
            DataError,
            "no column 'path'.*'file'.*--path-column",
        ),
        ("", ManifestColumns(), DataError, "is empty"),
        ("path,label\n", ManifestColumns(), DataError, "has no rows"),
        ("path\nx.jpg\n", ManifestColumns(id="key"), DataError, "no column 'key'.*--id-column"),
        ("path\nx.jpg\n", ManifestColumns(label="y"), DataError, "no column 'y'.*--label-column"),
        ("path\nx.jpg\n", ManifestColumns(keep=("z",)), DataError, "--keep-columns"),
        ("path,status\nx.jpg,a\n", ManifestColumns(keep=("status",)), UsageError, "clash"),
        ("path,p_x\nx.jpg,a\n", ManifestColumns(keep=("p_x",)), UsageError, "clash"),
        ("path,path\nx.jpg,y.jpg\n", ManifestColumns(), DataError, "duplicate column names"),
        ("path,a\nx.jpg,1\ny.jpg,2,3\n", ManifestColumns(), DataError, "Expected 2 columns"),
        (b"path\nx\xff.jpg\n", ManifestColumns(), DataError, "UTF-8"),
    ],
)
def test_bad_manifests_are_one_clear_error(tmp_path, content, columns, error, match):
    manifest = tmp_path / "m.csv"
    if isinstance(content, bytes):
        manifest.write_bytes(content)
    else:
        manifest.write_text(content)
    with pytest.raises(error, match=match):
        stage_manifest(manifest, tmp_path / "todo", columns)


def test_missing_or_folder_manifest(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        read_header(tmp_path / "nope.csv")
    with pytest.raises(UsageError, match="folder"):
        read_header(tmp_path)


def test_file_uri_manifest_resolves_against_its_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "sub" / "m.csv"
    manifest.write_text("path\nx.jpg\n")
    stage_manifest(manifest.as_uri(), tmp_path / "todo", ManifestColumns())
    assert staged_table(tmp_path / "todo")["path"][0].as_py() == os.fspath(
        tmp_path / "sub" / "x.jpg"
    )
