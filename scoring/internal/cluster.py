"""Starting or joining Ray, and sharing the CPUs between the scorer actors and Ray Data's tasks."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from models.errors import GenderscoreError, UsageError
from scoring.internal import logs

log = logging.getLogger("scoring")

#: Logical CPUs each read, decode and write task asks for.
TASK_CPUS = 0.25
#: Logical CPUs the actors leave to Ray Data's read, decode and write tasks, so that those
#: can always be scheduled beside them (four at a time). Logical only: the actors' threads
#: still use every core.
FREE_CPUS = 1.0
AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"


@dataclass(frozen=True)
class WorkerPlan:
    """How many scorer actors, their ORT threads, and the logical CPUs each asks Ray for."""

    workers: int
    threads: int
    actor_cpus: float
    cluster_cpus: float


def plan_workers(cluster_cpus: float, num_workers: int | None, threads: int) -> WorkerPlan:
    """Default: one single-thread actor per CPU (measured fastest for several models on 2
    cores). The actors' real threads use every core; their logical CPUs stay below the
    cluster's so that Ray Data's tasks can always be scheduled beside them."""
    if threads < 1:
        raise UsageError(f"--worker-threads must be at least 1, got {threads}")
    workers = num_workers if num_workers is not None else max(1, int(cluster_cpus // threads))
    if workers < 1:
        raise UsageError(f"--num-workers must be at least 1, got {workers}")
    budget = max(0.0, cluster_cpus - FREE_CPUS)
    actor_cpus = math.floor(min(float(threads), budget / workers) * 1e4) / 1e4
    return WorkerPlan(workers, threads, actor_cpus, cluster_cpus)


@contextmanager
def ray_session(address: str | None) -> Iterator[str]:
    """Use the Ray already initialised in this process, or start a local one (``address``
    None: this machine's CPUs, no dashboard) or join a cluster (``auto``, ``ray://...``),
    shutting down at the end what was started here. Yields a description for the summary."""
    if not address and AUTH_MODE_VARIABLE not in os.environ and "ray" not in sys.modules:
        # Ray 2.60 turns token authentication on for a local cluster it starts when the mode
        # is unset, and warns so on every run. Choosing it explicitly keeps the same (safer)
        # setting without the warning; it must be set before Ray reads its configuration (on
        # import), and an operator's RAY_AUTH_MODE is left alone.
        os.environ[AUTH_MODE_VARIABLE] = "token"
    import ray
    import ray.data  # noqa: F401 - it makes its loggers' handlers on import: adopt them too

    logs.follow_stderr()
    if ray.is_initialized():
        logs.adopt_library_loggers()
        logs.forward_worker_logs()
        if address:
            log.warning(
                "Ray is already initialised in this process: --ray-address %s unused", address
            )
        yield "existing"
        return
    kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise GenderscoreError(f"cannot start or join {where}: {exc}") from None
    # With --log-format json, Ray's own and its workers' lines go through the run's handler.
    logs.adopt_library_loggers()
    logs.forward_worker_logs()
    try:
        yield address or "local"
    finally:
        ray.shutdown()


def cluster_cpus() -> float:
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus <= 0:
        raise GenderscoreError("the Ray cluster reports no CPUs: start workers with CPUs")
    return cpus
