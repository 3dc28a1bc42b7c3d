"""SIGTERM and SIGINT, sent to a real `genderscore scoring run` as schedulers and terminals do
(to its whole process group), stop it cleanly: one line, Ray shut down, the lock released,
exit 143 or 130; the rerun of the same command resumes and the date holds every row once.
A second signal during the shutdown ends the process at once, Ray's processes with it; a
session's normal end leaves none of them behind either. Also
the stop handling on its own, with real signals sent to this process."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from nightly_support import (
    end_session,
    finished_parts,
    nightly_job,
    read_date,
    run_to_end,
    session_pids,
    spawn,
    summary_of,
    wait_for,
)

from models.errors import EXIT_SIGINT, EXIT_SIGTERM, RunStopped
from scoring.internal import signals

REPO = Path(__file__).resolve().parents[2]
ROWS = 1000
DATE = "2026-11-27"
#: Lines a clean stop must not print (Ray's C++ stack trace on SIGTERM, its abort, Ray Data's
#: failure line, a traceback, Ray's warnings that are no problem of the run).
NOISE = [
    "SIGTERM received",
    "clock_nanosleep",
    "execution failed",
    "Traceback",
    "Logging error",
    "Token authentication",
    "constructor arguments in the object store",
]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_becomes_one_run_stopped_with_the_exit_code_and_the_handlers_are_restored(sig):
    before = {s: signal.getsignal(s) for s in signals.SIGNALS}

    @signals.stops_cleanly
    def work() -> None:
        signals.report_progress(lambda: (120, 500))
        os.kill(os.getpid(), sig)
        time.sleep(30)  # the handler raises here, in the main thread

    t0 = time.monotonic()
    with pytest.raises(
        RunStopped, match=r"^stopped by SIG(TERM|INT) after 120 of 500 rows; fin"
    ) as err:
        work()
    assert time.monotonic() - t0 < 10
    assert err.value.exit_code == 128 + sig and err.value.signum == sig
    assert {s: signal.getsignal(s) for s in signals.SIGNALS} == before


def test_a_signal_while_committing_lets_the_commit_finish(caplog):
    done = []

    @signals.stops_cleanly
    def work() -> str:
        with signals.deferred("the output was being committed"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler has run meanwhile
            done.append("committed")
        return "finished"

    with caplog.at_level("WARNING", logger="scoring"):
        assert work() == "finished"
    assert done == ["committed"]
    assert "SIGTERM arrived while the output was being committed: finished that first" in (
        caplog.text
    )


def test_no_stop_handling_outside_the_main_thread():
    import threading

    seen = {}

    def other() -> None:
        with signals.stop_on_signals() as stopper:
            seen["stopper"] = stopper
            seen["active"] = signals.active()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == {"stopper": None, "active": False}


def write_job(tmp_path: Path, model: str) -> list[str]:
    """A manifest of ROWS ids, a config file, and the command that runs it."""
    return nightly_job(tmp_path, model, ROWS, DATE, "progress = false")


def lock_is_free(lock: Path) -> bool:
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, EXIT_SIGTERM), (signal.SIGINT, EXIT_SIGINT)]
)
def test_a_signal_to_the_process_group_stops_the_run_cleanly_and_the_rerun_resumes(
    model_paths, tmp_path, sig, code
):
    command = write_job(tmp_path, model_paths[0])
    staging = tmp_path / "scores" / f".run_date={DATE}.staging"
    log1 = tmp_path / "attempt1.log"
    first = spawn(command, log1)  # its own session: its process group is its pid
    try:
        wait_for(lambda: len(finished_parts(staging / "parts")) >= 2, 600, "two finished parts",
                 first, log1)  # fmt: skip
        # To the whole process group, as a terminal or a cron wrapper does: the local Ray the
        # run started is in it too, and must not go before the run has shut it down.
        os.killpg(first.pid, sig)
        t0 = time.monotonic()
        assert first.wait(timeout=300) == code, log1.read_text()[-3000:]
        took = time.monotonic() - t0
        # Ray shut down: nothing this run started is left (a worker Ray was starting as the
        # stop came may take a few seconds to notice its raylet is gone)
        wait_for(lambda: not session_pids(first.pid), 120, "Ray's processes to end")
    finally:
        end_session(first)
    text = log1.read_text()
    name = signal.Signals(sig).name
    stops = [line for line in text.splitlines() if "stopped by" in line]
    assert len(stops) == 1, text[-3000:]
    found = re.search(
        rf"stopped by {name} after (\d+) of {ROWS} rows; finished parts are kept; rerun the "
        r"same command to resume \[run \S+\]$",
        stops[0],
    )
    assert found, stops[0]
    done = int(found.group(1))
    assert 80 <= done < ROWS
    print(f"{name}: exit {code} {took:.1f} s after the signal")
    assert not [n for n in NOISE if n in text], text[-3000:]
    assert lock_is_free(tmp_path / "scores" / f".run_date={DATE}.lock")
    assert not (tmp_path / "scores" / f"run_date={DATE}").exists()  # nothing committed

    log2 = tmp_path / "attempt2.log"
    run_to_end(command, log2)
    day = tmp_path / "scores" / f"run_date={DATE}"
    table = read_date(day)
    assert table["row"].to_pylist() == list(range(ROWS))  # every row, exactly once
    assert set(table["status"].to_pylist()) == {"ok"}
    s = summary_of(day)
    assert s["attempts"] == 2 and s["rows_resumed"] == done
    assert s["rows_resumed"] + s["rows_scored"] == ROWS
    assert not [n for n in NOISE if n in log2.read_text()]


def spawn_script(tmp_path: Path, name: str, source: str):
    """Run ``source`` as a script of this checkout in its own session; (process, log)."""
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    log = tmp_path / f"{name}.log"
    return spawn([sys.executable, str(script)], log, {"PYTHONPATH": str(REPO)}), log


#: A stop whose shutdown hangs (as Ray's can on a loaded machine), on a real local Ray that
#: the scoring code started: the second signal must end it at once, Ray's processes too.
HANGING_SHUTDOWN = textwrap.dedent(
    """
    import time
    from scoring.internal import signals
    from scoring.internal import processes
    from scoring.internal.cluster import ray_session

    @signals.stops_cleanly
    def run():
        with ray_session(None):
            print("ready", flush=True)
            try:
                while True:
                    time.sleep(0.05)
            finally:
                print("shutting down", flush=True)
                time.sleep(600)

    run()
    """
)


@pytest.mark.slow
def test_a_second_signal_during_the_shutdown_ends_the_process_at_once(tmp_path):
    proc, log = spawn_script(tmp_path, "hang", HANGING_SHUTDOWN)
    try:
        wait_for(lambda: "ready" in log.read_text(), 300, "Ray to start", proc, log)
        assert len(session_pids(proc.pid)) > 3  # Ray's GCS, raylet, agents
        os.killpg(proc.pid, signal.SIGTERM)
        wait_for(lambda: "shutting down" in log.read_text(), 60, "the first stop", proc, log)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == EXIT_SIGTERM
        assert time.monotonic() - t0 < 30  # at once: not the 600 s the shutdown would take
        wait_for(lambda: not session_pids(proc.pid), 60, "Ray's processes to end")
    finally:
        end_session(proc)
    text = log.read_text()
    assert "second SIGTERM during the shutdown: stopping at once" in text, text
    assert "SIGTERM received" not in text  # Ray's C++ handler is not in the way


#: A local Ray started by the scoring code, with an actor and a task worker running, then
#: the session's end; the process lives on (as a scheduler's wrapper would) to be looked at.
SESSION_END = textwrap.dedent(
    """
    import time
    import ray
    from scoring.internal import processes
    from scoring.internal.cluster import ray_session

    @ray.remote
    class Echo:
        def ping(self):
            return "pong"

    with ray_session(None):
        actor = Echo.remote()
        assert ray.get(actor.ping.remote()) == "pong"
        assert ray.get(ray.remote(lambda: 1).remote()) == 1
        # the private hook the session's end uses to skip Ray's 1 s waits; still in this Ray?
        assert callable(processes.ray_node().kill_all_processes)
        print("ray up", flush=True)
    print("session ended", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.slow
def test_the_end_of_a_local_session_leaves_no_ray_process_behind(tmp_path):
    # Its processes have SIGTERM blocked, so the session ends them by SIGKILL, raylet first:
    # its workers (the actor's too) must not outlive it.
    proc, log = spawn_script(tmp_path, "session", SESSION_END)
    try:
        wait_for(lambda: "ray up" in log.read_text(), 300, "Ray to start", proc, log)
        assert len(session_pids(proc.pid)) > 4  # GCS, raylet, agents, the workers
        wait_for(lambda: "session ended" in log.read_text(), 120, "the session's end", proc, log)
        # killed, not left to notice the raylet's end: on a loaded machine its agents took 60 s
        wait_for(lambda: session_pids(proc.pid) == [proc.pid], 10, "Ray's processes to end")
        assert proc.poll() is None  # the driver itself lives on
    finally:
        end_session(proc)
    assert "Traceback" not in log.read_text()
