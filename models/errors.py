"""Errors every stage raises, and the exit codes the command line maps them to.

Exit codes (stable, documented in the README's Exit codes):
    0  success
    1  the run failed (an error while doing the work)
    2  a bad argument, config file or input given by the user
    3  the run finished but its error rate is above ``--max-error-rate``
  130  stopped by SIGINT (Ctrl-C), cleanly: rerun the same command to resume
  143  stopped by SIGTERM (a scheduler's stop), cleanly: rerun the same command to resume
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR_RATE = 3
#: 128 + the signal's number, as a shell reports a process the signal ended.
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class GenderscoreError(Exception):
    """Base class: a failure with a message meant for the user, on one line."""

    exit_code = EXIT_FAILED


class UsageError(GenderscoreError, ValueError):
    """A bad argument, config key or input: says what is wrong and how to fix it."""

    exit_code = EXIT_USAGE


class DataError(UsageError):
    """Input data (a folder, a CSV, a manifest, scores) that cannot be used as given."""


class ErrorRateExceeded(GenderscoreError):
    """The run completed, but more rows failed than the user allows."""

    exit_code = EXIT_ERROR_RATE


class RunStopped(GenderscoreError):
    """The run was stopped by SIGTERM or SIGINT and shut down cleanly (work kept for a rerun).
    The exit code is 128 + the signal's number: 143 for SIGTERM, 130 for SIGINT."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
