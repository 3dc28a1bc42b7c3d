"""`genderscore scoring run` as a nightly job, on a real local Ray with the converted models:
config file, OUT/run_date=D layout, rerun no-op, --force, --incremental, --max-error-rate and
JSON logs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from nightly_support import id_rows, read_date, summary_of, write_faces, write_manifest

from ensemble.scores import read_scores
from models.cli_support import run_cli
from models.errors import DataError
from scoring.cli import cli
from scoring.incremental import matches

PROG = "genderscore scoring"


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> list[Path]:
    return write_faces(tmp_path_factory.mktemp("faces"), 6)


def scoring(args: list[str], capsys) -> tuple[int, str, str]:
    code = run_cli(cli, PROG, ["run", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_config(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_config_file_flags_override_and_date_layout(
    ray_local, faces, model_paths, tmp_path, capsys, monkeypatch
):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_manifest(jobs / "m.csv", id_rows(range(10), faces))
    config = write_config(
        jobs / "nightly.toml",
        [
            'manifest = "m.csv"',  # relative to the file's folder
            "models = [" + ", ".join(json.dumps(m) for m in model_paths) + "]",
            'out = "scores"',
            "run_date = 2026-11-20",  # a TOML date
            "batch_size = 4",
            'id_column = "image_id"',
            "progress = false",
        ],
    )
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on where the command runs
    code, out, err = scoring(["--config", str(config), "--run-date", "2026-11-21"], capsys)
    assert code == 0, err
    root = jobs / "scores"
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == [
        "run_date=2026-11-21"
    ]  # the flag won over the file
    day = root / "run_date=2026-11-21"
    assert (day / "_SUCCESS").is_file() and not (root / ".run_date=2026-11-21.staging").exists()
    s = summary_of(day)
    assert s["run_date"] == "2026-11-21" and s["rows"] == 10 and s["rows_by_status"] == {"ok": 10}
    assert s["error_rate"] == 0.0 and s["images_per_s"] > 0 and s["wall_time_s"] > 0
    assert [m["name"] for m in s["models"]] == [Path(m).stem for m in model_paths]
    assert all(len(m["sha256"]) == 64 for m in s["models"]) and len(s["manifest_sha256"]) == 64
    assert s["ensemble_version"] is None and s["run_id"] in out
    assert sum(n["rows"] for n in s["ray"]["nodes"].values()) == 10
    table = read_date(day)
    assert table["id"].to_pylist() == [f"img{i}" for i in range(10)]
    meta = json.loads(pq.read_schema(sorted(day.glob("part-*"))[0]).metadata[b"genderscore"])
    assert meta["run_date"] == "2026-11-21" and meta["run_id"] == s["run_id"]
    # readers: the root is a Hive-partitioned dataset; ensemble commands take one date
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    assert dataset.to_table().num_rows == 10
    assert read_scores(day).table.num_rows == 10
    with pytest.raises(DataError, match="holds nightly runs.*run_date=2026-11-21"):
        read_scores(root)

    # a rerun of the committed date: nothing is done, exit 0, and it says so
    before = {p.name: p.stat().st_mtime_ns for p in day.iterdir()}
    code, out, err = scoring(["--config", str(config), "--run-date", "2026-11-21"], capsys)
    assert code == 0, err
    assert "already committed" in out and "nothing to do" in out and s["run_id"] in out
    assert {p.name: p.stat().st_mtime_ns for p in day.iterdir()} == before
    # --force scores it again, as a new run replacing the old one in one step
    code, out, err = scoring(
        ["--config", str(config), "--run-date", "2026-11-21", "--force"], capsys
    )
    assert code == 0, err
    again = summary_of(day)
    assert again["run_id"] != s["run_id"] and read_date(day).num_rows == 10


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("batchsize = 4", r"unknown key 'batchsize'; known keys: .*batch_size.*worker_threads"),
        ("batch-size = 4", r"unknown key 'batch-size' \(did you mean batch_size\?\)"),
        ('batch_size = "4"', r"batch_size must be a whole number, got '4' \(a string\)"),
        ("max_error_rate = true", r"max_error_rate must be a number, got True \(a boolean\)"),
        ('log_format = "xml"', r"log_format must be one of 'text', 'json'"),
        ("keep_columns = [1, 2]", r"keep_columns must be a list of strings"),
        ("batch_size = [", r"is not valid TOML"),
    ],
)
def test_a_bad_config_key_is_one_line_before_any_work(
    faces, model_paths, tmp_path, capsys, line, expected
):
    write_manifest(tmp_path / "m.csv", id_rows(range(3), faces))
    config = write_config(
        tmp_path / "nightly.toml",
        ['manifest = "m.csv"', f"models = [{json.dumps(model_paths[0])}]", 'out = "s"', line],
    )
    code, out, err = scoring(["--config", str(config)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert str(config) in lines[0]
    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # several dates scored on a real Ray
def test_incremental_skips_ids_scored_on_earlier_dates(
    ray_local, faces, model_paths, tmp_path, capsys
):
    root = tmp_path / "scores"
    base = ["--models", *model_paths, "--out", str(root), "--id-column", "image_id"]
    base += ["--no-progress", "--batch-size", "4"]
    # day 1: img0..img7, img3 unreadable
    write_manifest(tmp_path / "d1.csv", id_rows(range(8), faces, bad={3}))
    code, _, err = scoring(["--manifest", str(tmp_path / "d1.csv"), *base,
                            "--run-date", "2026-11-25"], capsys)  # fmt: skip
    assert code == 0, err
    # day 2: img4..img11 (img3 readable now), incremental
    write_manifest(tmp_path / "d2.csv", id_rows([3, *range(4, 12)], faces))
    args = ["--manifest", str(tmp_path / "d2.csv"), *base, "--run-date", "2026-11-26"]
    code, out, err = scoring([*args, "--incremental"], capsys)
    assert code == 0, err
    day2 = root / "run_date=2026-11-26"
    s = summary_of(day2)
    inc = s["incremental"]
    assert s["rows"] == 9 and s["rows_skipped"] == 4 and inc["rows_skipped"] == 4
    assert inc["sources"] == [
        {
            "output": str(root / "run_date=2026-11-25"),
            "run_id": summary_of(root / "run_date=2026-11-25")["run_id"],
            "rows": 4,
        }
    ]
    # the error row of day 1 is scored again; img4..img7 are not
    assert read_date(day2)["id"].to_pylist() == ["img3", *[f"img{i}" for i in range(8, 12)]]
    assert s["rows_in_output"] == 5 and s["rows_scored"] == 5
    assert "incremental: 4 rows already scored by earlier runs (4 in" in out
    # the same command again: a no-op (the earlier date it drew on is unchanged)
    code, out, _ = scoring([*args, "--incremental"], capsys)
    assert code == 0 and "nothing to do" in out
    # day 3: sources are the newest date holding each id
    write_manifest(tmp_path / "d3.csv", id_rows(range(13), faces))
    code, _, err = scoring(["--manifest", str(tmp_path / "d3.csv"), *base,
                            "--run-date", "2026-11-27", "--incremental"], capsys)  # fmt: skip
    assert code == 0, err
    s3 = summary_of(root / "run_date=2026-11-27")
    assert [(Path(x["output"]).name, x["rows"]) for x in s3["incremental"]["sources"]] == [
        ("run_date=2026-11-25", 7),
        ("run_date=2026-11-26", 5),
    ]
    assert read_date(root / "run_date=2026-11-27")["id"].to_pylist() == ["img12"]
    # other models, another id column or another ensemble: nothing is reused
    earlier = summary_of(root / "run_date=2026-11-25")
    pairs = [(m["name"], m["sha256"]) for m in earlier["models"]]
    assert matches(earlier, id_column="image_id", models=pairs, ensemble_version=None)
    assert not matches(earlier, id_column="image_id", models=pairs[:1], ensemble_version=None)
    assert not matches(earlier, id_column="other", models=pairs, ensemble_version=None)
    assert not matches(earlier, id_column="image_id", models=pairs, ensemble_version="ab12")


def test_incremental_needs_an_id_column(faces, model_paths, tmp_path, capsys):
    write_manifest(tmp_path / "m.csv", id_rows(range(3), faces))
    code, _, err = scoring(["--manifest", str(tmp_path / "m.csv"), "--models", model_paths[0],
                            "--out", str(tmp_path / "s"), "--incremental"], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--incremental needs --id-column" in err


def test_error_rate_above_the_limit_exits_3_after_committing(
    ray_local, faces, model_paths, tmp_path, capsys
):
    write_manifest(tmp_path / "m.csv", id_rows(range(10), faces, bad={2, 7}))
    args = ["--manifest", str(tmp_path / "m.csv"), "--models", model_paths[0], "--out",
            str(tmp_path / "s"), "--run-date", "2026-11-27", "--no-progress"]  # fmt: skip
    code, out, err = scoring([*args, "--max-error-rate", "0.1"], capsys)
    day = tmp_path / "s" / "run_date=2026-11-27"
    assert code == 3, err
    assert "error rate 20.00% (2 of 10 rows; not_found 2) is above --max-error-rate 0.1" in err
    assert (day / "_SUCCESS").is_file() and summary_of(day)["error_rate"] == 0.2
    assert "ok 8, error 2" in out  # the summary is printed before the error
    # the date stays over the limit: a rerun is a no-op and says so again with code 3
    code, out, err = scoring([*args, "--max-error-rate", "0.1"], capsys)
    assert code == 3 and "nothing to do" in out and "above --max-error-rate" in err
    code, out, err = scoring([*args, "--max-error-rate", "0.25"], capsys)
    assert code == 0, err
    code, _, err = scoring([*args, "--max-error-rate", "1.5"], capsys)
    assert code == 2 and "--max-error-rate must be a fraction from 0 to 1" in err


def test_json_logs_carry_the_run_id(ray_local, faces, model_paths, tmp_path, capsys):
    write_manifest(tmp_path / "m.csv", id_rows(range(6), faces, bad={1}))
    args = ["--manifest", str(tmp_path / "m.csv"), "--models", model_paths[0], "--out",
            str(tmp_path / "s"), "--log-format", "json", "--max-error-rate", "0.05"]  # fmt: skip
    code, out, err = scoring(args, capsys)
    assert code == 3 and out == ""
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    run_id = next(r for r in records if r.get("event") == "summary")["summary"]["run_id"]
    assert len(records) >= 3 and all(r["run_id"] == run_id for r in records)
    loggers = {r["logger"] for r in records}
    assert "scoring" in loggers and any(name.startswith("ray.data") for name in loggers), loggers
    errors = [r for r in records if r.get("event") == "error"]
    assert len(errors) == 1 and errors[0]["exit_code"] == 3
    # text logs show the run id too
    code, out, err = scoring([*args[:-4], "--max-error-rate", "0.5"], capsys)
    assert code == 0 and f"[run {run_id}]" in err and "nothing to do" in out


@pytest.mark.slow  # several dates scored on a real Ray
def test_incremental_backfill_rerun_and_force_on_a_middle_date(
    ray_local, faces, model_paths, tmp_path, capsys
):
    """Dates scored out of order (a backfill) with --incremental: every id is scored ok once,
    by the first run that commits it; reruns of committed dates stay no-ops; --force on a
    middle date with its own manifest keeps every id once, with another manifest it is refused
    while a later-scored date left ids out because of it."""
    root = tmp_path / "scores"
    base = ["--models", model_paths[0], "--out", str(root), "--id-column", "image_id"]
    base += ["--no-progress", "--batch-size", "4", "--incremental"]

    def run_date(day: str, ids, *more: str) -> tuple[int, str, str]:
        manifest = tmp_path / f"{day}-{ids[0]}-{ids[-1]}.csv"
        write_manifest(manifest, id_rows(ids, faces))
        return scoring(["--manifest", str(manifest), *base, "--run-date", day, *more], capsys)

    def held() -> dict[str, list[str]]:
        out = {}
        for folder in sorted(root.glob("run_date=*")):
            out[folder.name[len("run_date=") :]] = sorted(read_date(folder)["id"].to_pylist())
        return out

    def names(ids) -> list[str]:
        return sorted(f"img{i}" for i in ids)

    assert run_date("2026-11-27", list(range(10)))[0] == 0  # the later date first
    code, _, err = run_date("2026-11-25", list(range(5, 15)))  # backfill an earlier date
    assert code == 0, err
    assert held() == {"2026-11-25": names(range(10, 15)), "2026-11-27": names(range(10))}
    s25 = summary_of(root / "run_date=2026-11-25")
    assert [(Path(x["output"]).name, x["rows"]) for x in s25["incremental"]["sources"]] == [
        ("run_date=2026-11-27", 5)
    ]
    # reruns after the backfill: both dates are committed and stay as they are
    for day, ids in (("2026-11-27", list(range(10))), ("2026-11-25", list(range(5, 15)))):
        code, out, err = run_date(day, ids)
        assert code == 0 and "nothing to do" in out, err
    # a middle date: draws on the dates on both sides
    code, _, err = run_date("2026-11-26", list(range(20)))
    assert code == 0, err
    assert held()["2026-11-26"] == names(range(15, 20))
    first = summary_of(root / "run_date=2026-11-26")["run_id"]
    # --force on the middle date, same manifest: scored again, same ids, others untouched
    before = {d: summary_of(root / f"run_date={d}")["run_id"] for d in ("2026-11-25", "2026-11-27")}
    code, _, err = run_date("2026-11-26", list(range(20)), "--force")
    assert code == 0, err
    again = summary_of(root / "run_date=2026-11-26")
    assert again["run_id"] != first and again["rows_skipped"] == 15
    assert held()["2026-11-26"] == names(range(15, 20))
    assert before == {d: summary_of(root / f"run_date={d}")["run_id"] for d in before}
    # a date scored later draws on the middle date...
    assert run_date("2026-11-28", list(range(15, 23)))[0] == 0
    assert held()["2026-11-28"] == names(range(20, 23))
    # ...so rescoring the middle date with a manifest that lacks img18, img19 would lose them
    code, _, err = run_date("2026-11-26", list(range(15, 18)), "--force")
    assert code == 2 and "would lose ids: run_date=2026-11-28 left ids out" in err, err
    assert held()["2026-11-26"] == names(range(15, 20))
    # every id of every manifest is held ok exactly once across the dates
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    ids = table["id"].to_pylist()
    assert sorted(ids) == names(range(23)) and set(table["status"].to_pylist()) == {"ok"}


def test_incremental_runs_of_one_output_take_turns(faces, model_paths, tmp_path, capsys):
    import fcntl

    root = tmp_path / "scores"
    root.mkdir()
    write_manifest(tmp_path / "m.csv", id_rows(range(3), faces))
    args = ["--manifest", str(tmp_path / "m.csv"), "--models", model_paths[0], "--out",
            str(root), "--id-column", "image_id", "--incremental"]  # fmt: skip
    with open(root / ".incremental.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another incremental run
        code, _, err = scoring(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "another --incremental run is scoring a date under" in err and "wait for it" in err
    assert [p.name for p in root.iterdir()] == [".incremental.lock"]  # nothing else written
