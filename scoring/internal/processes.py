"""The processes below a pid (from ``/proc``), killing them without hitting a reused pid, and
the handle on the processes of a local Ray."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

#: A process as found: its pid and its start time (``/proc/PID/stat`` field 22).
Found = tuple[int, bytes]


def descendants(pid: int) -> list[Found]:
    """Every process below ``pid``; none where there is no ``/proc``."""
    parents: dict[int, list[Found]] = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if len(fields) > 19:
            parents.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found: list[Found] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += [kid for kid, _ in kids]
    return found


def kill(found: list[Found]) -> None:
    """SIGKILL each process still running as found (a pid since reused is left alone)."""
    for pid, started in found:
        fields = _stat(pid)
        if len(fields) > 19 and fields[19] == started:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def ray_node() -> Any | None:
    """Ray's node of this process's session (it lists and kills a local Ray's processes), or
    None outside a session. A private attribute: if a Ray release drops it, callers fall back
    to Ray's own, slower stop. Read from ``sys.modules`` so a signal handler never imports Ray."""
    return getattr(sys.modules.get("ray._private.worker"), "_global_node", None)


def _stat(pid: int) -> list[bytes]:
    """``/proc/PID/stat``'s fields after the command name (state, ppid, ...); [] if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []
