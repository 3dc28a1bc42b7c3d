"""Fetch many objects at once, at most ``concurrency`` at a time, none longer than ``timeout``.

An object store answers one request in tens of milliseconds, so a scorer actor reading its
batch one object after another would wait on the network most of the time. A fetch that
overruns its deadline is given up (its thread is left to finish or fail on its own, as a
blocked socket read cannot be interrupted) and its slot goes to the next object, so one
stuck object neither stalls the batch nor holds back the others.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class FetchTimeout(Exception):
    """The fetch of one item took longer than its deadline."""


def fetch_all(
    items: Sequence[T],
    fetch: Callable[[T], Any],
    *,
    concurrency: int,
    timeout: float,
) -> list[Any]:
    """``fetch(item)`` for every item, in threads; returns, in item order, each result or the
    exception it raised (:class:`FetchTimeout` past ``timeout`` seconds). Exceptions that
    are not ``Exception`` (KeyboardInterrupt) are not caught."""
    n = len(items)
    results: list[Any] = [None] * n
    done: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()

    def run(i: int) -> None:
        try:
            value: Any = fetch(items[i])
        except Exception as exc:  # handed to the caller as the item's result
            value = exc
        done.put((i, value))

    started: dict[int, float] = {}
    following = 0
    while following < n or started:
        while following < n and len(started) < max(1, concurrency):
            started[following] = time.monotonic()
            threading.Thread(target=run, args=(following,), daemon=True).start()
            following += 1
        wait = min(started.values()) + timeout - time.monotonic()
        try:
            i, value = done.get(timeout=max(wait, 0.0))
            if i in started:  # else it was given up already; its late result is dropped
                del started[i]
                results[i] = value
        except queue.Empty:
            pass
        now = time.monotonic()
        for i, t0 in list(started.items()):
            if now - t0 >= timeout:
                del started[i]
                results[i] = FetchTimeout(f"no answer within {timeout:g} s")
    return results
