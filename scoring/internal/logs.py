"""Log lines of a scoring run, each carrying the run id: human-readable text or JSON lines.

One handler on the root logger formats every record of the driver (genderscore's own and
the libraries': Ray, Ray Data); Ray's and Ray Data's console handlers are swapped for it, and
the lines Ray forwards from its worker processes are turned into records too, so that with
``--log-format json`` every line on stderr is one JSON object with ``run_id``.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
#: Loggers that install their own console handlers and do not propagate to the root.
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.train", "ray.tune")
_WORKER_LOGGER = "ray.worker"
_HANDLER_NAME = "genderscore-run"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its "(raylet)" prefixes
_run_id: str | None = None
_real_stderr: TextIO | None = None


def set_run_id(run_id: str | None) -> None:
    """The run id every following line carries (process-wide: Ray's log thread uses it too)."""
    global _run_id
    _run_id = run_id


def current_run_id() -> str | None:
    return _run_id


class RunIdFilter(logging.Filter):
    """Adds ``record.run_id`` (``-`` until a run has one); drops records Ray Data marks hidden
    (its own console handler hides them too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _run_id or "-"
        return not getattr(record, "hide", False)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, run_id, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "run_id": _run_id,
            "message": record.getMessage(),
        }
        for key in ("event", "summary", "worker", "exit_code"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s [run %(run_id)s] %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is emitted (it may be replaced), or
    to the real stderr when :func:`wrap_stderr_fd` took over file descriptor 2."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return _real_stderr if _real_stderr is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(log_format: str = "text") -> logging.Handler:
    """Send every record of the process to one handler on stderr in ``log_format``; replaces
    a plain ``logging.basicConfig`` handler and the one an earlier call installed."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    # Ray Data's logger is at DEBUG for its own file: only INFO and up reach the console.
    handler.setLevel(logging.INFO)
    handler.addFilter(RunIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        # plain handlers only: a test runner's capture handlers (subclasses) stay
        if type(old) is logging.StreamHandler or old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # warnings.warn (Ray Data's, for one) become records instead of raw stderr text
    logging.captureWarnings(True)
    adopt_library_loggers()
    return handler


def stderr_fd() -> int:
    """The file descriptor of the process's real stderr (2, unless :func:`wrap_std_fds` made
    2 a pipe)."""
    return _real_stderr.fileno() if _real_stderr is not None else 2


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is at the time of the write."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def follow_stderr() -> None:
    """Ray's console handlers (``PlainRayHandler`` on ``ray`` and ``ray.data``) say they write
    to whatever ``sys.stderr`` is when a line is logged, but keep the stream that was
    ``sys.stderr`` when they were made (Ray 2.60). Where ``sys.stderr`` is swapped and closed
    (pytest's capture per test, a notebook), a later line of Ray's then fails with ``--- Logging
    error --- ValueError: I/O operation on closed file``. Make them do what they say. Call it
    once ``ray`` and ``ray.data`` are imported (each makes its handler then)."""
    for name in LIBRARY_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ == "PlainRayHandler":
                handler.stream = _CurrentStderr()


def adopt_library_loggers() -> None:
    """Route the libraries' loggers through the root handler instead of their own console
    handlers (their file handlers stay). Call again after Ray or Ray Data configured theirs."""
    if not _configured():
        return
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
        lg.propagate = True


def forward_worker_logs() -> bool:
    """Turn the lines Ray forwards from worker processes into log records (so they get the
    run id and the format) instead of Ray printing them raw. Only when :func:`configure` ran;
    returns whether Ray's hook was found (a private interface of Ray 2.x)."""
    if not _configured():
        return False
    try:
        from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    worker_log = logging.getLogger(_WORKER_LOGGER)

    def emit(data: dict[str, Any]) -> None:
        who = data.get("actor_name") or data.get("task_name") or "worker"
        where = {"pid": data.get("pid"), "ip": data.get("ip"), "name": who}
        level = logging.WARNING if data.get("is_err") else logging.INFO
        for line in data.get("lines", []):
            if line.strip():
                worker_log.log(
                    level, "(%s pid=%s) %s", who, data.get("pid"), line, extra={"worker": where}
                )

    try:
        dispatcher.remove_handler("ray_print_logs")
    except (KeyError, AttributeError):
        return False
    dispatcher.add_handler("ray_print_logs", emit)
    return True


#: Lines Ray's C++ core writes to file descriptor 2 that are no problem of a scoring run, each
#: with why dropping it is safe.
NATIVE_NOISE = (
    # "Actor ... MapWorker(MapBatches(TalliedScorer)) ... has constructor arguments in the
    # object store and max_restarts > 0" (ray-project/ray#53727), once per scorer actor: Ray
    # Data itself puts every actor's DataContext and UDF in the object store and passes refs
    # (Ray 2.60; our model bytes are refs inside a list, not constructor arguments). The
    # driver holds those refs for the whole run, and their primary copies live in the
    # driver's node, so an actor restarted after a lost worker node finds them (tested:
    # test_lost_node); only the loss of the driver's own node would lose them, and that ends
    # the run anyway (the rerun resumes).
    re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in"),
)


def is_noise(line: str) -> bool:
    """Whether a line of file descriptor 2 is one of the :data:`NATIVE_NOISE` lines."""
    return any(p.search(line) for p in NATIVE_NOISE)


def wrap_std_fds() -> bool:
    """JSON lines also for what bypasses Python logging (Ray's C++ core, the messages Ray's
    driver threads print, native libraries): file descriptors 1 and 2 become pipes whose lines
    a thread logs as records of the ``stdout``/``stderr`` loggers, written to the real stderr
    (but the :data:`NATIVE_NOISE` lines). Only for a real process (not under a test runner's
    capture); returns whether it was done."""
    if _take_stderr():
        for fd, name in ((1, "stdout"), (2, "stderr")):
            level = logging.WARNING if fd == 2 else logging.INFO
            _pipe_fd(fd, functools.partial(logging.getLogger(name).log, level))
    return _real_stderr is not None


def filter_native_stderr() -> bool:
    """Text logs: drop the :data:`NATIVE_NOISE` lines from file descriptor 2, which Ray's C++
    core writes to directly. Descriptor 2 becomes a pipe whose lines a thread copies to the
    real stderr; ``sys.stderr`` (log lines, progress bars, tracebacks) writes to the real
    stderr directly. Only for a real process; returns whether it was done."""
    if _take_stderr():
        real = sys.stderr = _real_stderr

        def copy(line: str) -> None:
            real.write(line + "\n")

        _pipe_fd(2, copy, strip_colours=False)
    return _real_stderr is not None


def _take_stderr() -> bool:
    """Keep a stream on the real stderr (``_real_stderr``) before descriptor 2 is redirected.
    False when that was done already, or when descriptors 1 and 2 are not this process's own
    (a test runner's capture)."""
    global _real_stderr
    if _real_stderr is not None:
        return False
    try:
        if sys.stderr.fileno() != 2 or sys.stdout.fileno() != 1:
            return False
    except (AttributeError, OSError, ValueError):
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    _real_stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    return True


def _pipe_fd(fd: int, sink: Callable[[str], Any], strip_colours: bool = True) -> None:
    """Make ``fd`` a pipe; a thread hands each of its non-empty lines to ``sink`` but the
    :data:`NATIVE_NOISE` ones."""
    real = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                text = line.rstrip("\n")
                if text.strip() and not is_noise(text):
                    sink(_ANSI.sub("", text) if strip_colours else text)

    thread = threading.Thread(target=pump, name=f"genderscore-fd{fd}", daemon=True)
    thread.start()

    def restore() -> None:
        # the pipe's last write end closes: the thread drains what is left and stops
        (sys.stdout if fd == 1 else sys.stderr).flush()
        os.dup2(real, fd)
        thread.join(timeout=5)

    atexit.register(restore)


def _configured() -> bool:
    return any(h.get_name() == _HANDLER_NAME for h in logging.getLogger().handlers)
