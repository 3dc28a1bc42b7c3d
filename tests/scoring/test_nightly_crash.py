"""Kill the driver of a real `genderscore scoring run` mid-run (SIGKILL, no cleanup), run the
same command again: the run resumes under its first run id and the committed date holds every
manifest row exactly once. Also checks the killed run's JSON log lines."""

from __future__ import annotations

import json
import signal

from nightly_support import (
    finished_parts,
    kill_driver_when,
    nightly_job,
    read_date,
    run_to_end,
    summary_of,
)

ROWS = 800
DATE = "2026-11-27"


def test_kill_the_driver_mid_run_then_rerun_scores_every_row_once(model_paths, tmp_path):
    command = nightly_job(tmp_path, model_paths[0], ROWS, DATE, 'log_format = "json"')
    staging = tmp_path / "scores" / f".run_date={DATE}.staging"
    log1 = tmp_path / "attempt1.log"
    first = kill_driver_when(
        command, log1, lambda: len(finished_parts(staging / "parts")) >= 2, "two finished parts"
    )
    kept = finished_parts(staging / "parts")
    assert first.returncode == -signal.SIGKILL
    assert not (tmp_path / "scores" / f"run_date={DATE}").exists()  # nothing committed
    lines = log1.read_text().splitlines()
    records = [json.loads(line) for line in lines[:-1]]  # the last line may be cut by the kill
    run_id = records[0]["run_id"]
    assert run_id and all(r["run_id"] == run_id for r in records)

    run_to_end(command, tmp_path / "attempt2.log")
    day = tmp_path / "scores" / f"run_date={DATE}"
    table = read_date(day)
    assert table["row"].to_pylist() == list(range(ROWS))  # every row, exactly once
    assert table["id"].to_pylist() == [f"img{i}" for i in range(ROWS)]
    assert set(table["status"].to_pylist()) == {"ok"}
    s = summary_of(day)
    assert s["run_id"] == run_id and s["attempts"] == 2
    assert s["rows_resumed"] >= 40 and len(kept) >= 2  # finished parts were kept
    assert s["rows_resumed"] + s["rows_scored"] == ROWS
    assert not staging.exists()
    second_records = [
        json.loads(line) for line in (tmp_path / "attempt2.log").read_text().splitlines()
    ]
    assert all(r["run_id"] == run_id for r in second_records)
    # Ray's warnings that are no problem of the run stay out of the log (docs/operations.md)
    messages = [r["message"] for r in records + second_records]
    assert not [m for m in messages if "Token authentication" in m or "constructor arg" in m]
