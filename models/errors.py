"""Errors every stage raises, and the exit codes the command line maps them to.

Exit codes (stable, documented in the README's Exit codes):
    0  success
    1  the run failed (an error while doing the work)
    2  a bad argument, config file or input given by the user
    3  the run finished but its error rate is above ``--max-error-rate``
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR_RATE = 3


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
