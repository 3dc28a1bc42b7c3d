"""Faults of an S3 output: the S3 endpoint goes away mid-run (the run fails with one message,
the rerun resumes), and the driver is killed mid-run (the rerun resumes). Both end with every
manifest row exactly once in the committed date, read by its listing."""

from __future__ import annotations

import json
import re
import signal
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nightly_support import (
    end_session,
    kill_driver_when,
    run_to_end,
    spawn,
    wait_for,
    write_faces,
)

from scoring.objectstore import read_committed

DATE = "2026-11-27"
ROWS = 400
ROWS_PER_FILE = 20  # many small parts: some are finished when the run is cut


def finished_parts(s3, prefix: str) -> list[str]:
    """Part objects under ``bucket/prefix`` (an object exists whole or not at all)."""
    infos = s3.filesystem().get_file_info(pa.fs.FileSelector(prefix, allow_not_found=True))
    return [i.path for i in infos if i.base_name.startswith("part-")]


def setup_run(s3, bucket: str, tmp_path) -> tuple[str, str]:
    """Faces on S3 and a local manifest of ``ROWS`` rows naming them; returns (manifest, out)."""
    s3.bucket(bucket)
    faces = write_faces(tmp_path / "faces", 8)
    for f in faces:
        s3.put(f"{bucket}/faces/{f.name}", f.read_bytes())
    manifest = tmp_path / "m.csv"
    lines = ["image_id,path"] + [f"img{i},{faces[i % 8].name}" for i in range(ROWS)]  # under --root
    manifest.write_text("\n".join(lines) + "\n")
    return str(manifest), f"s3://{bucket}/scores"


def committed_rows(s3, uri: str) -> tuple[pa.Table, dict]:
    committed = read_committed(uri, s3.storage())
    assert committed is not None, f"{uri} is not committed"
    table = pq.read_table(committed.files, filesystem=committed.filesystem).sort_by("row")
    return table, committed.summary


@pytest.mark.slow
def test_the_endpoint_going_away_mid_run_fails_the_run_and_the_rerun_resumes(
    s3, model_paths, tmp_path
):
    """Each attempt is its own process, as an operator's rerun is (and so bounded in time)."""
    manifest, out = setup_run(s3, "outage", tmp_path)
    relay = s3.new_relay()  # this test's own endpoint to the server, cut below
    command = [sys.executable, "-m", "scoring", "run", "--manifest", manifest]
    command += ["--root", "s3://outage/faces", "--out", out, "--models", model_paths[0]]
    command += ["--run-date", DATE, "--id-column", "image_id", "--batch-size", "8"]
    command += ["--rows-per-file", str(ROWS_PER_FILE), "--no-progress"]
    command += ["--storage-option", f"endpoint_override={relay.endpoint}"]
    prefix = f"outage/scores/run_date={DATE}"

    log1 = tmp_path / "attempt1.log"
    first = spawn(command, log1)
    try:
        wait_for(lambda: len(finished_parts(s3, prefix)) >= 2, 600, "two parts", first, log1)
        relay.stop()
        code = first.wait(timeout=180)
    finally:
        end_session(first)
    err = log1.read_text(errors="replace")
    errors = [line for line in err.splitlines() if ": error: scoring failed: " in line]
    assert code == 1 and len(errors) == 1, err[-3000:]  # one message (above: the run's log)
    # a scorer actor's read of an image or a writer's upload of a part meets it first
    assert "StorageUnreachable: cannot read s3://outage/faces/" in errors[0] or (
        "in bucket 'outage'" in errors[0] and "NETWORK_CONNECTION" in errors[0]
    )
    # curl's words: "Could not connect", or "Couldn't connect" in pyarrow 17's wheel
    assert re.search(r"Could(n't| not) connect", errors[0]), errors[0]
    assert "rerun the same command to resume" in errors[0]
    assert read_committed(f"s3://{prefix}", s3.storage()) is None  # nothing committed
    kept = finished_parts(s3, prefix)

    relay.start()  # the server is back, on the same port, with the parts written so far
    run_to_end(command, tmp_path / "attempt2.log", timeout=600)
    table, summary = committed_rows(s3, f"s3://{prefix}")
    assert table["row"].to_pylist() == list(range(ROWS))  # every row, exactly once
    assert set(table["status"].to_pylist()) == {"ok"}
    assert summary["attempts"] == 2 and len(kept) >= 2
    assert summary["rows_resumed"] >= 2 * ROWS_PER_FILE
    assert summary["rows_resumed"] + summary["rows_scored"] == ROWS


@pytest.mark.slow
def test_kill_the_driver_of_an_s3_run_then_rerun_scores_every_row_once(s3, model_paths, tmp_path):
    manifest, out = setup_run(s3, "crash", tmp_path)
    config = tmp_path / "nightly.toml"
    config.write_text(
        "\n".join(
            [
                f"manifest = {json.dumps(manifest)}",
                f"models = [{json.dumps(model_paths[0])}]",
                f'out = "{out}"',
                'root = "s3://crash/faces"',
                f'run_date = "{DATE}"',
                'id_column = "image_id"',
                "batch_size = 8",
                f"rows_per_file = {ROWS_PER_FILE}",
                "progress = false",
                "[storage_options]",  # as a TOML table, and so into the workers
                f'endpoint_override = "{s3.endpoint}"',
            ]
        )
        + "\n"
    )
    command = [sys.executable, "-m", "scoring", "run", "--config", str(config)]
    prefix = f"crash/scores/run_date={DATE}"
    first = kill_driver_when(
        command,
        tmp_path / "attempt1.log",
        lambda: len(finished_parts(s3, prefix)) >= 2,
        "two parts on S3",
    )
    kept = finished_parts(s3, prefix)
    assert first.returncode == -signal.SIGKILL
    assert read_committed(f"s3://{prefix}", s3.storage()) is None

    run_to_end(command, tmp_path / "attempt2.log")
    table, summary = committed_rows(s3, f"s3://{prefix}")
    assert table["row"].to_pylist() == list(range(ROWS))
    assert table["id"].to_pylist() == [f"img{i}" for i in range(ROWS)]
    assert summary["attempts"] == 2 and len(kept) >= 2
    assert summary["rows_resumed"] >= 2 * ROWS_PER_FILE
    assert summary["rows_resumed"] + summary["rows_scored"] == ROWS
    # only the listed parts remain, and no staging
    names = {p.rsplit("/", 1)[1] for p in finished_parts(s3, prefix)}
    listed = {p.rsplit("/", 1)[1] for p in read_committed(f"s3://{prefix}", s3.storage()).files}
    assert names == listed
    staging = s3.filesystem().get_file_info(f"crash/scores/.run_date={DATE}.staging")
    assert staging.type == pa.fs.FileType.NotFound
