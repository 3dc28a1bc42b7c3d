"""Finding the processes below a pid and killing them, on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from scoring.internal import processes

SLEEPER = "import time; time.sleep(120)"
PARENT = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); time.sleep(120)"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_descendants_reach_grandchildren_and_kill_spares_a_reused_pid():
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = [f for f in processes.descendants(os.getpid()) if f[0] == parent.pid]
            found += [f for f in processes.descendants(parent.pid) if _running(f[0])]
            if len(found) == 2:  # the child, found below this process, and its own child
                break
            time.sleep(0.05)
        assert len(found) == 2
        processes.kill([(pid, b"another start time") for pid, _ in found])
        assert all(_running(pid) for pid, _ in found)  # not the processes found: left alone
        processes.kill(found)
        assert parent.wait(timeout=10) == -9
        deadline = time.monotonic() + 10  # the grandchild, reparented, is reaped by init
        while _running(found[1][0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(pid) for pid, _ in found)
    finally:
        parent.kill()
        parent.wait()
