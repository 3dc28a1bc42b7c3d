"""Helpers of the nightly tests: small face images, manifests with ids, the output's rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.synthetic import synthetic_face


def write_faces(folder: Path, n: int, size: int = 48, seed: int = 0) -> list[Path]:
    """``n`` small synthetic face JPEGs; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"face{i:03d}.jpg"
        synthetic_face(i % 2, rng, (size, size)).save(path, quality=90)
        paths.append(path)
    return paths


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A CSV ``image_id,path`` with one line per ``(id, path)``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path"])
        w.writerows(rows)
    return path


def id_rows(ids: range | list[int], faces: list[Path], bad: set[int] = frozenset()) -> list:
    """Manifest rows ``img<i>`` pointing at the faces in turn; ids in ``bad`` name no file."""
    return [
        (
            f"img{i}",
            str(faces[i % len(faces)].parent / "missing.jpg")
            if i in bad
            else str(faces[i % len(faces)]),
        )
        for i in ids
    ]


def read_date(folder: Path) -> pa.Table:
    return pq.read_table(sorted(folder.glob("part-*.parquet"))).sort_by("row")


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "_summary.json").read_text())


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on loopback right now."""
    import socket

    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def spawn(args: list[str], log: Path, env: dict | None = None):
    """Start a process in its own session (everything it starts stays in that session, even
    Ray's workers, which take process groups of their own), output to ``log``."""
    import os
    import subprocess

    with open(log, "wb") as fh:
        return subprocess.Popen(
            args,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def end_session(proc, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, every process of the session ``proc`` leads, by pid: only what
    this test started."""
    import os
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = session_pids(proc.pid)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline and session_pids(proc.pid):
            time.sleep(0.2)
    if proc.poll() is None:
        proc.wait(timeout=grace)


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of a session."""
    import os

    import psutil

    pids = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(p.info["pid"]) == sid and p.info["status"] != psutil.STATUS_ZOMBIE:
                pids.append(p.info["pid"])
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return pids


def wait_for(predicate, timeout: float, what: str, proc=None, log: Path | None = None):
    """Poll ``predicate`` until it returns something truthy; fail (with the log's tail) on
    timeout or when ``proc`` ends first."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"process ended (code {proc.returncode}) before {what}:\n{tail}")
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{tail}")


def finished_parts(parts: Path) -> list[Path]:
    """Parts with a readable footer (a part being written has none yet)."""
    done = []
    for f in sorted(parts.glob("*.parquet")) if parts.is_dir() else []:
        try:
            pq.read_metadata(f)
            done.append(f)
        except Exception:  # noqa: BLE001 - half-written: not finished
            continue
    return done


def kill_driver_when(command: list[str], log: Path, ready, what: str):
    """Run ``command`` (a scoring run) in its own session; once ``ready()`` is truthy, SIGKILL
    its driver only (no finally, no atexit), then end everything it started: the local Ray a
    killed driver started outlives it (measured: still running after 60 s), as after a real
    crash until the reboot. Returns the killed process."""
    import os
    import signal

    proc = spawn(command, log)
    try:
        wait_for(ready, timeout=600, what=what, proc=proc, log=log)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        end_session(proc)
    return proc


def run_to_end(command: list[str], log: Path, env: dict | None = None, timeout: float = 900):
    """Run ``command`` in its own session until it ends; fail with the log's tail unless it
    exits 0 (a rerun that must resume and commit)."""
    proc = spawn(command, log, env)
    try:
        assert proc.wait(timeout=timeout) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        end_session(proc)


def nightly_job(tmp_path: Path, model: str, rows: int, run_date: str, *extra: str) -> list[str]:
    """Faces, a manifest of ``rows`` ids and a config file in ``tmp_path`` (40 rows per part:
    some parts are finished when a test stops the run; ``extra``: more TOML lines); returns
    the command that runs it."""
    import sys

    faces = write_faces(tmp_path / "faces", 8)
    write_manifest(tmp_path / "m.csv", id_rows(range(rows), faces))
    lines = ['manifest = "m.csv"', f"models = [{json.dumps(model)}]", 'out = "scores"']
    lines += [f'run_date = "{run_date}"', 'id_column = "image_id"', "batch_size = 8"]
    lines += ["rows_per_file = 40", *extra]
    config = tmp_path / "nightly.toml"
    config.write_text("\n".join(lines) + "\n")
    return [sys.executable, "-m", "scoring", "run", "--config", str(config)]
