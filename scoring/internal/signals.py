"""A clean stop on SIGTERM and SIGINT: what systemd, Kubernetes, Airflow and cron wrappers send
before SIGKILL, and Ctrl-C.

While :func:`stop_on_signals` is active (in the main thread), the first SIGTERM or SIGINT
raises :class:`StopRequested` where the main thread is. It is a KeyboardInterrupt, so Ray Data
shuts its executor down as on Ctrl-C, and every ``finally`` on the way out runs: Ray is shut
down, the output's lock released. :func:`stops_cleanly` turns it into one
:class:`models.errors.RunStopped` (exit 143 for SIGTERM, 130 for SIGINT) that says how far
the run got. A second signal during that shutdown ends the process at once: the Ray processes
this process started are killed and it exits with 128 + the signal's number. Finished parts
are on disk either way, and the rerun resumes (a SIGKILL at any point is survived too).

Ray takes SIGTERM over: ``ray.init`` installs a Python handler (``sys.exit(15)``), and its C++
core installs abseil's failure handler, which prints a stack trace and arms a 3 s ``SIGALRM``
abort (exit 134) before chaining to Python; ``ray.shutdown`` resets SIGTERM to the default
(death). :func:`reinstall` puts the stop handlers back after each (``scoring.internal.cluster``
calls it); abseil's handler stays on the crash signals (SIGSEGV, SIGABRT, ...), where its
stack traces are wanted.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from models.errors import RunStopped
from scoring.internal import processes

log = logging.getLogger("scoring")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Where Ray Data logs that a dataset's execution ended early (a Ray 2.60 module name).
_EXECUTOR_LOGGER = "ray.data._internal.execution.streaming_executor"
F = TypeVar("F", bound=Callable[..., Any])


class StopRequested(KeyboardInterrupt):
    """Raised in the main thread by the first SIGTERM or SIGINT."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Stopper:
    """The handlers' state: which signal came first, whether it waits for a section that must
    not be cut (the commit), and how to tell how far the run got."""

    def __init__(self) -> None:
        self.signum_: int | None = None
        self.deferring_ = 0
        self.saved_: dict[int, Any] = {}
        #: ``() -> (rows in finished parts, rows the output will hold)``, set once known.
        self.progress: Callable[[], tuple[int, int]] | None = None

    def install(self) -> None:
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            self.saved_.setdefault(sig, previous)
        logging.getLogger(_EXECUTOR_LOGGER).addFilter(self._quiet_stopped_dataset)

    def restore(self) -> None:
        logging.getLogger(_EXECUTOR_LOGGER).removeFilter(self._quiet_stopped_dataset)
        for sig, previous in self.saved_.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)

    def _quiet_stopped_dataset(self, record: logging.LogRecord) -> bool:
        """Ray Data's "Dataset ... execution failed" after a stop: the stop line says it."""
        return self.signum_ is None or "execution failed" not in record.getMessage()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum_ is not None:
            _exit_now(signum)
        self.signum_ = signum
        if self.deferring_:
            return  # the section finishes (see deferred)
        raise StopRequested(signum)

    def error(self, stop: StopRequested) -> RunStopped:
        name = signal.Signals(stop.signum).name
        done, total = self._progress()
        if total is None:
            text = f"stopped by {name} before any row was scored; rerun the same command to start"
        else:
            text = (
                f"stopped by {name} after {min(done, total)} of {total} rows; finished parts "
                "are kept; rerun the same command to resume"
            )
        return RunStopped(text, stop.signum)

    def _progress(self) -> tuple[int, int | None]:
        if self.progress is None:
            return 0, None
        try:
            return self.progress()
        except OSError:
            return 0, None


_active: _Stopper | None = None


@contextmanager
def stop_on_signals() -> Iterator[_Stopper | None]:
    """Handle SIGTERM and SIGINT as a clean stop for the block (main thread only: signal
    handlers live there; elsewhere, and inside an outer block, nothing changes). Yields the
    active stopper, or None."""
    global _active
    if _active is not None or threading.current_thread() is not threading.main_thread():
        yield _active
        return
    stopper = _Stopper()
    stopper.install()
    _active = stopper
    try:
        yield stopper
    finally:
        _active = None
        stopper.restore()


def stops_cleanly(fn: F) -> F:
    """Run ``fn`` inside :func:`stop_on_signals`; a stop becomes one RunStopped."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with stop_on_signals() as stopper:
            try:
                return fn(*args, **kwargs)
            except StopRequested as stop:
                if stopper is None:
                    raise
                raise stopper.error(stop) from None

    return wrapper  # type: ignore[return-value]


def reinstall() -> None:
    """Put the stop handlers back after Ray replaced them (``ray.init``) or reset SIGTERM to
    the default (``ray.shutdown``); nothing when no stop handling is active."""
    if _active is not None and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _active._handle)


def report_progress(progress: Callable[[], tuple[int, int]]) -> None:
    """Say how to count the run's progress for the stop message."""
    if _active is not None:
        _active.progress = progress


def active() -> bool:
    """Whether stop handling is on (a stop becomes RunStopped)."""
    return _active is not None


@contextmanager
def deferred(what: str) -> Iterator[None]:
    """A section a first signal must not cut (``what``: committing the output): the run
    finishes it and goes on as if no signal had come, since the work is then done; a second
    signal still ends the process at once."""
    stopper = _active
    if stopper is None:
        yield
        return
    stopper.deferring_ += 1
    try:
        yield
    finally:
        stopper.deferring_ -= 1
    if stopper.signum_ is not None and not stopper.deferring_:
        log.warning(
            "%s arrived while %s: finished that first",
            signal.Signals(stopper.signum_).name,
            what,
        )


def _exit_now(signum: int) -> None:
    """The second signal: kill the Ray processes this process started (a local Ray outlives
    its driver otherwise) and exit without further cleanup."""
    name = signal.Signals(signum).name
    _write_stderr(f"second {name} during the shutdown: stopping at once; finished parts are "
                  "kept; rerun the same command to resume\n")  # fmt: skip
    # Ray's workers are the raylet's children, not in Ray's list of its own processes: taken
    # before the raylet dies (they are reparented then), killed after it.
    children = processes.descendants(os.getpid())
    node = processes.ray_node()
    if node is not None:
        try:
            node.kill_all_processes(check_alive=False, allow_graceful=False)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    processes.kill(children)
    os._exit(128 + signum)


def _write_stderr(text: str) -> None:
    from scoring.internal import logs

    try:
        os.write(logs.stderr_fd(), text.encode("utf-8", "replace"))
    except OSError:
        pass
