"""Issue 8's manifest cases beyond tests/scoring/test_scoring_manifest.py: each quirk on its
own (so a failure names it), and the whole-manifest problems a spreadsheet export produces."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from models.cli_support import run_cli
from models.errors import DataError
from scoring.cli import cli
from scoring.manifest import ManifestColumns, stage_manifest


def staged(tmp_path, content: bytes, **columns):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(content)
    result = stage_manifest(manifest, tmp_path / "todo", ManifestColumns(**columns))
    table = pq.read_table(result.files)
    return result, table


@pytest.mark.parametrize(
    ("content", "ids"),
    [
        (b"\xef\xbb\xbfpath\na.jpg\n", ["a.jpg"]),  # UTF-8 BOM: the column is 'path', not BOM+path
        (b'path,label\n"x, y.jpg",m\n"q""uote.jpg",f\n', ["x, y.jpg", 'q"uote.jpg']),
        (b"path\n\na.jpg\n\n\nb.jpg\n\n", ["a.jpg", "b.jpg"]),  # blank lines are not rows
        (b"path,w,x,y,z\na.jpg,1,2,3,4\n", ["a.jpg"]),  # extra columns ignored
        (b"path\r\na.jpg\r\nb.jpg\r\n", ["a.jpg", "b.jpg"]),  # CRLF: no '\r' in the path
        (b"path\na.jpg", ["a.jpg"]),  # no newline at the end
        (b"path\n a.jpg \n", [" a.jpg "]),  # spaces are part of a file name
        ("path\nüñí cödé.jpg\n".encode(), ["üñí cödé.jpg"]),
    ],
)
def test_csv_quirks_each_parse(tmp_path, content, ids):
    result, table = staged(tmp_path, content)
    assert result.rows == len(ids)
    assert table["row"].to_pylist() == list(range(len(ids)))
    assert table["id"].to_pylist() == ids
    assert table["path"].to_pylist() == [str(tmp_path / i) for i in ids]


def test_duplicate_rows_stay_separate_rows(tmp_path):
    result, table = staged(tmp_path, b"path\na.jpg\na.jpg\na.jpg\n")
    assert result.rows == 3 and table["row"].to_pylist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"\xef\xbb\xbf", "is empty"),  # a BOM and nothing else
        (b"\n\n\n", "is empty"),
        (b"\xef\xbb\xbfpath,label\r\n\r\n", "has no rows"),
        (
            b"file,label\nx.jpg,m\n",
            r"no column 'path' \(its columns: 'file', 'label'\).*--path-column",
        ),
        (b"\xef\xbb\xbfPath\nx.jpg\n", r"no column 'path' \(its columns: 'Path'\)"),
        (b"path;label\nx.jpg;m\n", "has one column 'path;label': a manifest is comma-separated"),
        (b"path\tlabel\nx.jpg\tm\n", "has one column 'path\\\\tlabel': a manifest is comma-sep"),
        ("path\nx.jpg\n".encode("utf-16"), "header is not UTF-8.*not UTF-16"),
        ("path\ncafé.jpg\n".encode("latin-1"), "cannot be read as UTF-8 CSV"),
        (
            b'path\na.jpg\n"b.jpg\nc.jpg\nd.jpg\n',
            r"row 1 has a path cell spanning several lines.*quote",
        ),
        (b'path\n"multi\nline.jpg"\n', "row 0 has a path cell spanning several lines"),
    ],
)
def test_whole_manifest_problems_are_one_clear_error(tmp_path, content, match):
    with pytest.raises(DataError, match=match):
        staged(tmp_path, content)
    assert not list((tmp_path / "todo").glob("*.parquet"))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"file\nx.jpg\n", "no column 'path'"),
        ("path\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_cli_reports_a_bad_manifest_on_one_line_before_any_work(
    tmp_path, capsys, onnx_models, content, match
):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(content)
    out = tmp_path / "out"
    args = ["run", "--manifest", str(manifest), "--out", str(out), "--no-progress",
            "--models", str(onnx_models["mobilenetv2"])]  # fmt: skip
    code = run_cli(cli, "genderscore scoring", args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err
    assert list(tmp_path.iterdir()) == [manifest]  # no output, staging or lock
