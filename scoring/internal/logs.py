"""Log lines of a scoring run, each carrying the run id: human-readable text or JSON lines.

One handler on the root logger formats every record of the driver (genderscore's own and
the libraries': Ray, Ray Data); Ray's and Ray Data's console handlers are swapped for it, and
the lines Ray forwards from its worker processes are turned into records too, so that with
``--log-format json`` every line on stderr is one JSON object with ``run_id``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sys
import threading
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


def wrap_std_fds() -> bool:
    """JSON lines also for what bypasses Python logging (Ray's C++ core, the messages Ray's
    driver threads print, native libraries): file descriptors 1 and 2 become pipes whose lines
    a thread logs as records of the ``stdout``/``stderr`` loggers, written to the real stderr.
    Only for a real process (not under a test runner's capture); returns whether it was done."""
    global _real_stderr
    if _real_stderr is not None:
        return True
    try:
        if sys.stderr.fileno() != 2 or sys.stdout.fileno() != 1:
            return False
    except (AttributeError, OSError, ValueError):
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    _real_stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    for fd, name in ((1, "stdout"), (2, "stderr")):
        _pipe_fd_to_logger(fd, logging.getLogger(name))
    return True


def _pipe_fd_to_logger(fd: int, logger: logging.Logger) -> None:
    real = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)
    level = logging.WARNING if fd == 2 else logging.INFO

    def pump() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    logger.log(level, _ANSI.sub("", line.rstrip("\n")))

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
