"""`genderscore scoring run` with the manifest, the images and the output on a real S3 server
(moto, on loopback), on a real local Ray with the converted models; the ensemble commands and
``--incremental`` read the output by its listing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from nightly_support import write_faces

from ensemble.cli import cli as ensemble_cli
from ensemble.scores import read_scores
from models.cli_support import run_cli
from scoring.cli import cli
from scoring.objectstore import read_committed

DATE = "2026-11-27"


def scoring(args: list[str], capsys) -> tuple[int, str, str]:
    code = run_cli(cli, "genderscore scoring", ["run", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def upload_faces(s3, bucket: str, folder: Path, n: int) -> list[str]:
    """``n`` face JPEGs under ``bucket/faces/``; returns their keys relative to the bucket."""
    s3.bucket(bucket)
    keys = []
    for path in write_faces(folder, n):
        s3.put(f"{bucket}/faces/{path.name}", path.read_bytes())
        keys.append(f"faces/{path.name}")
    return keys


def manifest_text(rows: list[tuple[str, str]]) -> bytes:
    lines = ["image_id,path,label"]
    lines += [f"{i},{p},{'male' if n % 2 else 'female'}" for n, (i, p) in enumerate(rows)]
    return ("\n".join(lines) + "\n").encode()


def date_rows(s3, uri: str) -> pa.Table:
    committed = read_committed(uri, s3.storage())
    assert committed is not None, f"{uri} is not committed"
    return pq.read_table(committed.files, filesystem=committed.filesystem).sort_by("row")


def test_manifest_images_and_output_on_s3(ray_local, s3, model_paths, tmp_path, capsys):
    keys = upload_faces(s3, "night", tmp_path / "faces", 6)
    # relative paths resolve under the manifest's prefix; one names no object
    rows = [(f"img{i}", f"../{keys[i % 6]}") for i in range(10)] + [("img10", "../faces/gone.jpg")]
    s3.put("night/manifests/d1.csv", manifest_text(rows))
    base = ["--models", *model_paths, "--out", "s3://night/scores", "--id-column", "image_id"]
    base += ["--no-progress", "--batch-size", "4", *_opts(s3)]
    code, out, err = scoring(["--manifest", "s3://night/manifests/d1.csv", *base,
                              "--run-date", DATE], capsys)  # fmt: skip
    assert code == 0, err
    day = f"s3://night/scores/run_date={DATE}"
    assert f"-> {day}" in out
    table = date_rows(s3, day)
    assert table["row"].to_pylist() == list(range(11))
    assert table["path"].to_pylist()[0] == "s3://night/faces/face000.jpg"
    assert table["status"].to_pylist() == ["ok"] * 10 + ["error"]
    assert table["error_code"].to_pylist()[10] == "not_found"
    fs = s3.filesystem()
    summary = json.loads(fs.open_input_stream(f"night/scores/run_date={DATE}/_summary.json").read())
    assert summary["output"] == day and summary["rows_by_status"] == {"error": 1, "ok": 10}
    assert sum(n["rows"] for n in summary["ray"]["nodes"].values()) == 11  # tallied on S3
    staging = fs.get_file_info(f"night/scores/.run_date={DATE}.staging")
    assert staging.type == pa.fs.FileType.NotFound
    # the same command again: a no-op
    code, out, _ = scoring(["--manifest", "s3://night/manifests/d1.csv", *base,
                            "--run-date", DATE], capsys)  # fmt: skip
    assert code == 0 and "nothing to do" in out

    # a stray part in the committed date (a zombie writer's): no reader may count it
    listed = read_committed(day, s3.storage()).files
    stray = f"night/scores/run_date={DATE}/part-zombie-000000-0.parquet"
    fs.copy_file(listed[0], stray)
    assert read_scores(day, s3.storage()).table.num_rows == 11

    # day 2, incremental: ids scored ok on day 1 are left out (the stray copy adds nothing)
    rows2 = [(f"img{i}", f"s3://night/{keys[i % 6]}") for i in range(8, 14)]
    s3.put("night/manifests/d2.csv", manifest_text(rows2))
    code, out, err = scoring(["--manifest", "s3://night/manifests/d2.csv", *base, "--incremental",
                              "--run-date", "2026-11-28"], capsys)  # fmt: skip
    assert code == 0, err
    day2 = "s3://night/scores/run_date=2026-11-28"
    assert date_rows(s3, day2)["id"].to_pylist() == ["img10", "img11", "img12", "img13"]
    inc = json.loads(fs.open_input_stream("night/scores/run_date=2026-11-28/_summary.json").read())
    assert inc["incremental"]["sources"] == [
        {"output": day, "run_id": summary["run_id"], "rows": 2}
    ]

    # the ensemble commands read the listed parts of an S3 output
    ens = tmp_path / "ensemble.json"
    code = run_cli(ensemble_cli, "genderscore ensemble", ["tune", "--scores", day, *_opts(s3),
                   "--objective", "eer", "--positive", "male", "--method", "mean",
                   "--n-boot", "100", "--cv", "2", "--out", str(ens)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    code = run_cli(ensemble_cli, "genderscore ensemble", ["evaluate", "--ensemble", str(ens),
                   "--scores", day, *_opts(s3), "--n-boot", "100"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "dropped 1 of 11 rows" in captured.out
    code = run_cli(ensemble_cli, "genderscore ensemble", ["apply", "--ensemble", str(ens),
                   "--scores", day, *_opts(s3), "--out", str(tmp_path / "decided.parquet")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert pq.read_table(tmp_path / "decided.parquet").num_rows == 11
    # a nightly root is several runs; an uncommitted prefix is not read
    code = run_cli(ensemble_cli, "genderscore ensemble", ["apply", "--ensemble", str(ens),
                   "--scores", "s3://night/scores", *_opts(s3), "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 2 and "holds nightly runs (run_date=2026-11-27, run_date=2026-11-28)" in (
        capsys.readouterr().err
    )


def _opts(s3, relay=None) -> list[str]:
    return [arg for opt in s3.options(relay) for arg in ("--storage-option", opt)]
