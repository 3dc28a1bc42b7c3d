"""`genderscore scoring run` with the manifest, the images and the output on a real S3 server
(moto, on loopback), on a real local Ray with the converted models; the ensemble commands and
``--incremental`` read the output by its listing."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
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


@pytest.mark.slow  # a whole run against the S3 server, then a rerun
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


def test_denied_missing_and_slow_objects_are_row_errors(
    ray_local, s3, model_paths, tmp_path, capsys
):
    """With access checked (IAM user allowed one bucket, its keys given as storage options, so
    the Ray workers get them with the job and not from their environment)."""
    keys = upload_faces(s3, "open", tmp_path / "faces", 3)
    s3.bucket("closed")
    s3.put("closed/face.jpg", (tmp_path / "faces" / "face000.jpg").read_bytes())
    s3.put("closed/m.csv", manifest_text([("x", "s3://open/faces/face000.jpg")]))
    s3.put("open/slow/face.jpg", (tmp_path / "faces" / "face001.jpg").read_bytes())
    key, secret = s3.user_for("open")
    creds = ["--storage-option", f"access_key={key}", "--storage-option", f"secret_key={secret}"]
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(
        manifest_text(
            [
                ("ok0", f"s3://open/{keys[0]}"),
                ("denied", "s3://closed/face.jpg"),
                ("missing", "s3://open/faces/none.jpg"),
                ("slow", "s3://open/slow/face.jpg"),
                ("ok1", f"s3://open/{keys[1]}"),
            ]
        )
    )
    args = ["--models", model_paths[0], "--id-column", "image_id", "--no-progress"]
    args += ["--run-date", DATE, *_opts(s3), *creds]
    s3.relay.delays[b"/open/slow/face.jpg"] = 12.0
    try:
        with s3.enforcing_access():
            # an output the user may not write: one line, before any work
            code, _, err = scoring(["--manifest", str(manifest), "--out", "s3://closed/scores",
                                    *args], capsys)  # fmt: skip
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"cannot use --out s3://closed/scores/run_date={DATE} (endpoint" in err
            assert "ACCESS_DENIED" in err
            # a manifest it may not read
            code, _, err = scoring(["--manifest", "s3://closed/m.csv", "--out",
                                    str(tmp_path / "o"), *args], capsys)  # fmt: skip
            assert code == 2 and "manifest s3://closed/m.csv: permission denied" in err
            # keys the server does not know: before any work, not a run of error rows
            wrong = [
                "--storage-option",
                "access_key=AKIANOBODY",
                "--storage-option",
                "secret_key=x",
            ]
            code, _, err = scoring(["--manifest", str(manifest), "--out", str(tmp_path / "o"),
                                    *args, *wrong], capsys)  # fmt: skip
            assert code == 2 and "cannot use the images in s3://open/" in err, err
            assert "INVALID_ACCESS_KEY_ID" in err
            t0 = time.monotonic()
            code, _, err = scoring(["--manifest", str(manifest), "--out", str(tmp_path / "o"),
                                    *args, "--read-timeout", "4"], capsys)  # fmt: skip
            took = time.monotonic() - t0
            assert code == 0, err
    finally:
        del s3.relay.delays[b"/open/slow/face.jpg"]
    table = pq.read_table(tmp_path / "o" / f"run_date={DATE}").sort_by("row")
    assert table["status"].to_pylist() == ["ok", "error", "error", "error", "ok"], table["error"]
    assert table["error_code"].to_pylist()[1:4] == ["permission_denied", "not_found", "timeout"]
    assert "ACCESS_DENIED" in table["error"][1].as_py()
    assert "within 4 s" in table["error"][3].as_py()
    assert took < 120  # the slow object held back nothing for long


def test_a_wrong_endpoint_is_one_line_before_any_work(s3, model_paths, tmp_path, capsys):
    from s3_support import free_port

    s3.bucket("nowhere")
    dead = ["--storage-option", f"endpoint_override=http://127.0.0.1:{free_port()}"]
    local = tmp_path / "m.csv"
    local.write_bytes(manifest_text([("a", "s3://nowhere/a.jpg")]))
    cases = [
        (
            ["--manifest", "s3://nowhere/m.csv", "--out", str(tmp_path / "o")],
            "manifest s3://nowhere/m.csv",
        ),
        (
            ["--manifest", str(local), "--out", str(tmp_path / "o")],
            "the images in s3://nowhere/a.jpg",
        ),
        (
            ["--manifest", str(local), "--out", "s3://nowhere/scores"],
            "--out s3://nowhere/scores/run_date=",
        ),
    ]
    for extra, what in cases:
        t0 = time.monotonic()
        code, _, err = scoring(
            [*extra, "--models", model_paths[0], "--run-date", DATE, *dead], capsys
        )
        # one error line (the image stores are checked once the manifest is staged, after
        # the run's first log line), and no scoring: Ray is not even started
        errors = [line for line in err.splitlines() if line.startswith("genderscore scoring:")]
        assert code == 2 and len(errors) == 1 and err.strip().endswith(errors[0]), err
        # curl's words: "Could not connect", or "Couldn't connect" in pyarrow 17's wheel
        assert f"cannot use {what}" in errors[0], errors[0]
        assert re.search(r"Could(n't| not) connect", errors[0]), errors[0]
        assert "check --storage-option endpoint_override/region/scheme" in errors[0]
        assert time.monotonic() - t0 < 30
        assert "ray" not in err.lower()
    assert not list((tmp_path / "o").glob("**/*.parquet"))
