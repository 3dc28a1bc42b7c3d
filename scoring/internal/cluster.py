"""Starting or joining Ray, and sharing the CPUs between the scorer actors and Ray Data's tasks."""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from models.errors import GenderscoreError, UsageError
from scoring.internal import logs, processes, signals

log = logging.getLogger("scoring")

#: Logical CPUs each read and write task asks for.
TASK_CPUS = 0.25
#: Logical CPUs the actors leave to Ray Data's read and write tasks, so that those
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


def plan_workers(
    cluster_cpus: float, num_workers: int | None, threads: int, largest_node: float = 0.0
) -> WorkerPlan:
    """Default: one single-thread actor per CPU (measured fastest for several models on 2
    cores). The actors' real threads use every core; their logical CPUs stay below the
    cluster's so that Ray Data's tasks can always be scheduled beside them.

    ``largest_node``: the CPUs of the cluster's largest node, on a cluster of several nodes.
    The actors then ask for few enough logical CPUs that, should that node be lost, Ray can
    restart its actors on the nodes left: an actor it cannot place stays pending, and Ray
    Data waits for the batches it held forever (a stall). Logical only, as above."""
    if threads < 1:
        raise UsageError(f"--worker-threads must be at least 1, got {threads}")
    workers = num_workers if num_workers is not None else max(1, int(cluster_cpus // threads))
    if workers < 1:
        raise UsageError(f"--num-workers must be at least 1, got {workers}")
    budget = max(0.0, cluster_cpus - FREE_CPUS)
    after_loss = cluster_cpus - largest_node - FREE_CPUS
    if 0 < largest_node < cluster_cpus and after_loss > 0:
        budget = min(budget, after_loss)
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
    _init(ray, address, kwargs)
    # With --log-format json, Ray's own and its workers' lines go through the run's handler.
    logs.adopt_library_loggers()
    logs.forward_worker_logs()
    try:
        yield address or "local"
    finally:
        _shutdown(ray)
        signals.reinstall()  # ray.shutdown reset SIGTERM to the default (death)


def _init(ray: Any, address: str | None, kwargs: dict[str, Any]) -> None:
    """``ray.init``; a failure is one GenderscoreError, a stop during it leaves no Ray behind."""
    mask = None if address else _block_sigterm()
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
        signals.reinstall()  # ray.init took SIGTERM over (see scoring.internal.signals)
        if mask is not None:
            # a SIGTERM that came during the start is handled here, by the run's handler
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            mask = None
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise GenderscoreError(f"cannot start or join {where}: {exc}") from None
    except BaseException as exc:
        # A stop while Ray starts: what it started so far goes too.
        _shutdown(ray)
        signals.reinstall()
        if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM and signals.active():
            # ray.init's own SIGTERM handler (sys.exit(15)) was in place until ours is back
            raise signals.StopRequested(signal.SIGTERM) from None
        raise
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _shutdown(ray: Any) -> None:
    """``ray.shutdown()``, ending the processes of a local Ray started here at once.

    They have SIGTERM blocked (see ``_block_sigterm``), so Ray's graceful stop (SIGTERM, 1 s
    wait, then SIGKILL, one process after the other) only ever ended them by SIGKILL, after
    waiting a second for each of its five: 5.3 s of every run's stop. Ray's non-graceful
    stop (``ray stop --force``, its test clusters) sends the SIGKILL without the wait; by
    then the driver has disconnected and the run's output is written. The raylet's children
    go the same way. A joined cluster is left running either way (this process started
    none of its processes)."""
    node = processes.ray_node()
    kill_all = getattr(node, "kill_all_processes", None)  # None: Ray's own stop is used
    orphans: list[processes.Found] = []
    if kill_all is not None:
        # ray.shutdown asks for the graceful stop; the instance's attribute overrides it.
        node.kill_all_processes = functools.partial(_kill_at_once, kill_all)
        raylets = getattr(node, "all_processes", {}).get("raylet", [])
        orphans = [p for info in raylets for p in processes.descendants(info.process.pid)]
    ray.shutdown()
    # The raylet's own children (its dashboard and runtime-env agents, workers) notice its
    # end by polling; under load that took 60 s (they have SIGTERM blocked too).
    processes.kill(orphans)


def _kill_at_once(
    kill_all: Any, check_alive: bool = True, allow_graceful: bool = False, wait: bool = False
) -> None:
    kill_all(check_alive=check_alive, allow_graceful=False, wait=wait)


def _block_sigterm() -> set[signal.Signals] | None:
    """Block SIGTERM while a local Ray starts, so that its processes never see one meant for
    the run; returns the mask to restore (None outside the main thread, which signals skip).

    The GCS, raylet and agents a local ``ray.init`` starts are in this process's process group
    and cgroup, so a stop sent to the whole group (``kill -TERM -PGID``, a cron wrapper) or to
    every process of a systemd unit (its default ``KillMode``) reaches them too. Gone before
    this process has shut Ray down, they leave it waiting 60 s for the GCS and exiting 1
    (seen once in four stops). A blocked signal stays blocked across ``exec`` (Ray blocks
    SIGINT for them the same way), and the run's own shutdown ends them (``_shutdown``:
    SIGKILL)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def join_dataset_threads(timeout: float = 60.0) -> None:
    """Wait (up to ``timeout`` seconds) for Ray Data's executor threads to end.

    When a dataset stops early (a stop, a stall, a failed task), Ray Data shuts its executor
    down with a 2 s join of its scheduling thread; under load the thread is often still in a
    scheduling step then. If ``ray.shutdown()`` comes meanwhile, the thread's next call into
    Ray ends the whole process with exit 1 ("The core worker has already been shutdown", in
    Ray's driver log only), before the run can say why it stopped (measured: 1 stop in 6)."""
    import threading
    import time

    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if isinstance(thread, StreamingExecutor) and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


def cluster_cpus() -> float:
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus <= 0:
        raise GenderscoreError("the Ray cluster reports no CPUs: start workers with CPUs")
    return cpus


def largest_node_cpus() -> float:
    """The CPUs of the largest live node (all of them on one machine)."""
    import ray

    return max(
        (float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")),
        default=0.0,
    )
