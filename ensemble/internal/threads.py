"""BLAS threading for the tiny matrices the ensemble fits on."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from threadpoolctl import threadpool_limits

F = TypeVar("F", bound=Callable)


def one_blas_thread(func: F) -> F:
    """Run ``func`` with one BLAS/OpenMP thread: an (n, few models) problem never gains from
    more, and on a busy 2-core node thread hand-offs made a logistic fit ~10x slower."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
