"""A real 2-node Ray cluster on loopback (`ray start` head + worker, each its own raylet):
`scoring run --ray-address` spreads the scorer actors over both nodes, and killing the worker
node's Ray worker processes mid-run loses no row.

Each node gets 2 logical CPUs (there are 2 real cores): a scorer actor takes 1, and Ray Data's
read, decode and write tasks need free logical CPUs beside it, which 1-CPU nodes each holding
an actor would never have. The cluster's processes run in two sessions this test started, and
only those are ended at the end (never `ray stop`, which would end every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from nightly_support import (
    end_session,
    free_ports,
    id_rows,
    read_date,
    session_pids,
    spawn,
    summary_of,
    wait_for,
    write_faces,
    write_manifest,
)

RAY = str(Path(sys.executable).with_name("ray"))
ROWS = 800
DATE = "2026-11-27"


def _node_ports(first_worker_port: int) -> list[str]:
    nm, om, metrics, agent, agent_grpc, env_agent = free_ports(6)
    return [
        f"--node-manager-port={nm}", f"--object-manager-port={om}",
        f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
        f"--min-worker-port={first_worker_port}", f"--max-worker-port={first_worker_port + 199}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    """``(GCS address, worker node's process, environment)``; always torn down."""
    # A short temp dir: Ray's socket paths under it must stay below the 107-byte limit.
    temp = tempfile.mkdtemp(prefix="gs-ray-", dir="/tmp")
    logs = Path(temp) / "logs"
    logs.mkdir()
    gcs, client, dashboard = free_ports(3)
    # worker port ranges below the ephemeral ports free_ports hands out (32768 and up) and
    # above Ray's default range (10002-19999, which other Ray instances here use)
    base = random.randrange(20000, 32000, 400)
    # Ray 2.60's head turns token authentication on, its workers do not: off for all three
    # (head, worker, driver) on this loopback-only cluster.
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    # The test kills workers itself. Ray's memory monitor would kill more whenever the shared
    # test machine (not this cluster) is short of memory, and a node busy on 2 loaded cores
    # may miss heartbeats for a while: neither is what is tested here.
    env["RAY_memory_monitor_refresh_ms"] = "0"
    env["RAY_health_check_failure_threshold"] = "60"
    common = ["--block", "--num-cpus=2", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    head = spawn(
        [RAY, "start", "--head", f"--port={gcs}", f"--temp-dir={temp}",
         "--include-dashboard=false", f"--dashboard-port={dashboard}",
         f"--ray-client-server-port={client}", *common, *_node_ports(base)],
        logs / "head.log", env,
    )  # fmt: skip
    procs = [head]
    try:
        wait_for(lambda: "Ray runtime started" in (logs / "head.log").read_text(), 300,
                 "the head node", head, logs / "head.log")  # fmt: skip
        worker = spawn(
            [RAY, "start", f"--address=127.0.0.1:{gcs}", *common, *_node_ports(base + 200)],
            logs / "worker.log", env,
        )  # fmt: skip
        procs.append(worker)
        wait_for(lambda: "Ray runtime started" in (logs / "worker.log").read_text(), 300,
                 "the worker node", worker, logs / "worker.log")  # fmt: skip
        yield f"127.0.0.1:{gcs}", worker, env
    finally:
        for proc in reversed(procs):
            end_session(proc)
        shutil.rmtree(temp, ignore_errors=True)


def ray_workers(sid: int) -> list[psutil.Process]:
    """The Ray worker processes (tasks and actors) of one node's session."""
    found = []
    for pid in session_pids(sid):
        try:
            p = psutil.Process(pid)
            args = p.cmdline()
        except psutil.Error:
            continue
        # Workers only, matched on their own script or title: the raylet's command line names
        # the worker script too, and the agents are titled ray::...Agent; killing either of
        # those takes the whole node down, which is not the fault tested here.
        script = args[1] if len(args) > 1 else ""
        title = args[0] if args else ""
        if (title.startswith("ray::") and not title.endswith("Agent")) or script.endswith(
            "default_worker.py"
        ):
            found.append(p)
    return found


def tallies(staging: Path) -> list[dict]:
    out = []
    for f in (staging / "workers").glob("*.json") if staging.is_dir() else []:
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def test_work_spreads_over_two_nodes_and_killing_one_nodes_workers_loses_no_row(
    cluster, model_paths, tmp_path
):
    address, worker, env = cluster
    faces = write_faces(tmp_path / "faces", 8)
    write_manifest(tmp_path / "m.csv", id_rows(range(ROWS), faces))
    out = tmp_path / "scores"
    staging = out / f".run_date={DATE}.staging"
    log = tmp_path / "driver.log"
    driver = spawn(
        [sys.executable, "-m", "scoring", "run", "--manifest", str(tmp_path / "m.csv"),
         "--models", model_paths[0], "--out", str(out), "--run-date", DATE,
         "--id-column", "image_id", "--ray-address", address, "--num-workers", "2",
         "--batch-size", "8", "--rows-per-file", "20", "--log-format", "json"],
        log, env,
    )  # fmt: skip
    try:
        # wait until the worker node's scorer actor has scored rows, then kill every Ray
        # worker process of that node (its actor and any decode/write tasks on it)
        def worker_node_busy() -> bool:
            on_node = {p.pid for p in ray_workers(worker.pid)}
            return any(t["pid"] in on_node and t["rows"] > 0 for t in tallies(staging))

        wait_for(worker_node_busy, 600, "the worker node to score rows", driver, log)
        killed = ray_workers(worker.pid)
        for p in killed:
            os.kill(p.pid, signal.SIGKILL)
        assert killed
        assert driver.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        if driver.poll() is None:
            end_session(driver)
    day = out / f"run_date={DATE}"
    table = read_date(day)
    assert table["row"].to_pylist() == list(range(ROWS))  # no row lost, none twice
    assert set(table["status"].to_pylist()) == {"ok"}
    s = summary_of(day)
    assert s["ray"]["cluster_cpus"] == 4 and s["ray"]["address"] == address
    nodes = s["ray"]["nodes"]
    assert len(nodes) == 2 and all(n["rows"] > 0 for n in nodes.values()), nodes
    # rows scored by the killed actor and not yet written were scored again
    assert sum(n["rows"] for n in nodes.values()) >= ROWS
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all(r["run_id"] == s["run_id"] for r in records)
