"""A stall watchdog: interrupt a thread that waits on work which no longer moves.

The driver of a scoring run blocks in Ray Data's ``write_parquet``; when a Ray node dies
mid-run it can wait there forever. The watchdog polls a progress count (rows the scorer
actors tallied plus output files written) and, when the count has not changed for
``timeout`` seconds, raises KeyboardInterrupt in the waiting thread: Ray Data's output
iterator catches it, shuts its executor down and re-raises it, so the caller can turn it
into an error while its ``finally`` blocks (``ray.shutdown()``, the output's lock) still run.
"""

from __future__ import annotations

import _thread
import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger("scoring")


class StallWatchdog:
    """Interrupts the thread that entered it when ``progress()`` stays the same for
    ``timeout`` seconds (0: never). Use as ``with StallWatchdog(...) as dog:``; after a
    KeyboardInterrupt, ``dog.fired_`` tells a stall from a user's Ctrl-C."""

    def __init__(
        self,
        progress: Callable[[], int],
        timeout: float,
        *,
        poll: float | None = None,
        what: str = "work",
    ) -> None:
        self.progress = progress
        self.timeout = timeout
        #: Seconds between two looks at ``progress`` (reading the tally files is cheap).
        self.poll = poll if poll is not None else min(5.0, max(0.05, timeout / 20))
        self.what = what
        self.fired_ = False
        self.stopped_ = threading.Event()
        self.lock_ = threading.Lock()
        self.thread_: threading.Thread | None = None
        self.target_: int | None = None

    def __enter__(self) -> StallWatchdog:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self.fired_ and exc_type is None:
            # It fired just as the body finished: the interrupt is on its way; take it here,
            # inside the caller's try, rather than somewhere after it.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                time.sleep(0.01)

    def start(self) -> None:
        """Start watching on behalf of the calling thread (nothing when ``timeout`` is 0)."""
        if self.timeout <= 0:
            return
        self.target_ = threading.get_ident()
        self.thread_ = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
        self.thread_.start()

    def stop(self) -> None:
        """Stop watching; after this returns the watchdog fires no more."""
        with self.lock_:
            self.stopped_.set()
        if self.thread_ is not None and self.thread_ is not threading.current_thread():
            self.thread_.join()

    def _count(self, last: int) -> int:
        try:
            return self.progress()
        except OSError:
            return last  # an unreadable count is no news, not progress

    def _watch(self) -> None:
        last = self._count(-1)
        since = time.monotonic()
        while not self.stopped_.wait(self.poll):
            now = self._count(last)
            if now != last:
                last, since = now, time.monotonic()
                continue
            if time.monotonic() - since < self.timeout:
                continue
            with self.lock_:
                if self.stopped_.is_set():
                    return
                self.fired_ = True
                log.error(
                    "no progress for %g s (%s stayed at %d): interrupting the run",
                    self.timeout,
                    self.what,
                    last,
                )
                self._interrupt()
            return

    def _interrupt(self) -> None:
        main = self.target_ == threading.main_thread().ident
        if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            # As a Ctrl-C: also seen inside Ray's blocking calls, which poll for signals.
            _thread.interrupt_main()
            return
        # Another thread (score_manifest called from a thread), or SIGINT ignored (a shell
        # starts background jobs so: interrupt_main would do nothing): the same
        # KeyboardInterrupt, raised in that thread when it next runs Python code.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self.target_), ctypes.py_object(KeyboardInterrupt)
        )
