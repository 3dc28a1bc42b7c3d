"""What the benchmarks share for watching a run's process tree: a sampling thread that lives
as long as a ``with`` block, and a short name for each process."""

from __future__ import annotations

import os
import threading
from typing import Any


class Background:
    """A daemon thread running ``self._run`` while inside ``with``; ``_run`` ends when
    ``self._stop`` is set (wait on it to sleep between samples)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError


def process_kind(cmdline: list[str]) -> str:
    """A short name for a process of the tree: ``ray::MapWorker``, ``raylet``, ``gcs_server``."""
    if not cmdline:
        return "?"
    first = cmdline[0]
    if first.startswith("ray::"):
        return first.split("(")[0].split(".")[0]
    for arg in cmdline[:3]:
        name = os.path.basename(arg)
        if name in ("raylet", "gcs_server") or name.endswith(".py"):
            return name
    return os.path.basename(first)
