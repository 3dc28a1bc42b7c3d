"""The stall watchdog: a run whose scorer actors stop moving (SIGSTOP on their real processes,
as when a Ray node is lost) fails with one clear error instead of waiting forever, keeps its
parts, and the rerun of the same call resumes and scores every row exactly once. Also the
watchdog on its own (main thread, another thread, SIGINT ignored) and --stall-timeout's checks."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import psutil
import pytest
from nightly_support import id_rows, read_date, wait_for, write_faces, write_manifest

from models.cli_support import run_cli
from models.errors import GenderscoreError, UsageError
from scoring.cli import cli
from scoring.config import read_config
from scoring.internal.tally import read_tally, scorer_actors
from scoring.internal.watchdog import StallWatchdog
from scoring.layout import RunLayout
from scoring.run import score_manifest

ROWS = 800
#: Seconds: the limit of both runs. Above the scorer actors' start-up (importing ONNX Runtime,
#: loading the model), which took more than 5 s on 2 cores under load: the watchdog then
#: fired before any actor scored a row, and there was nothing to stop.
STALL = 20.0


def scorer_processes(layout: RunLayout) -> dict[int, str]:
    """pid -> description of the run's live scorer actors, as each reports itself in the
    run's tally (no Ray internals)."""
    found = {}
    for actor in scorer_actors(layout.tally):
        if alive(actor["pid"]):  # not an actor of an earlier attempt, ended since
            found[actor["pid"]] = f"scorer actor {actor['pid']} on node {actor['node_id'][:8]}"
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tallied_rows(layout: RunLayout) -> int:
    return sum(node["rows"] for node in read_tally(layout.tally).values())


def test_stopped_scorer_actors_fail_the_run_and_the_rerun_resumes(ray_local, model_paths, tmp_path):
    faces = write_faces(tmp_path / "faces", 6)
    manifest = write_manifest(tmp_path / "m.csv", id_rows(range(ROWS), faces))
    out = tmp_path / "scores"
    layout = RunLayout(out)
    args = dict(
        models=[model_paths[0]], out=out, id_column="image_id", batch_size=4, num_workers=1,
        rows_per_file=40, stall_timeout=STALL, progress=False,
    )  # fmt: skip
    stopped: dict[int, str] = {}
    done = threading.Event()

    def stop_the_scorers() -> None:
        """Once the actors have scored a few files' worth of rows, freeze every scorer
        process (a real stall)."""
        while not done.is_set():
            if tallied_rows(layout) >= 200:
                for pid, title in scorer_processes(layout).items():
                    os.kill(pid, signal.SIGSTOP)
                    stopped[pid] = title
                if stopped:
                    return
            time.sleep(0.02)

    freezer = threading.Thread(target=stop_the_scorers, daemon=True)
    freezer.start()
    try:
        with pytest.raises(
            GenderscoreError, match=rf"no progress for {STALL:g} s .*rerun the same"
        ):
            score_manifest(manifest, **args)
        done.set()
        freezer.join()
        assert stopped, "no scorer actor process was found to stop"
        scored_before = tallied_rows(layout)
        assert 200 <= scored_before < ROWS
    finally:
        done.set()
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    # Ray Data shut its executor down on the interrupt and let go of its actors; Ray ends their
    # processes once they run again (measured: not while stopped, even after 30 s).
    wait_for(
        lambda: not [p for p in stopped if alive(p)],
        timeout=60,
        what=f"the scorer processes to end: {sorted(stopped.values())}",
    )
    assert not layout.committed
    kept = layout.done_rows().size  # rows in the parts written before the stall
    assert not (set(stopped) & set(scorer_processes(layout)))

    result = score_manifest(manifest, **args)  # the same call: resumes, lock free
    table = read_date(out)
    assert table["row"].to_pylist() == list(range(ROWS))  # every row, exactly once
    assert table["id"].to_pylist() == [f"img{i}" for i in range(ROWS)]
    assert set(table["status"].to_pylist()) == {"ok"}
    assert result.summary["attempts"] == 2
    assert result.summary["rows_resumed"] == kept > 0  # the parts the stalled run wrote
    assert result.summary["rows_resumed"] + result.summary["rows_scored"] == ROWS


def test_the_watchdog_interrupts_the_main_thread_once_progress_stops():
    with pytest.raises(KeyboardInterrupt):
        with StallWatchdog(lambda: 7, 0.3, poll=0.05) as dog:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.01)
    assert dog.fired_ and not dog.thread_.is_alive()


def test_the_watchdog_interrupts_even_when_sigint_is_ignored():
    """A shell starts background (cron-like) jobs with SIGINT ignored, where Python's
    interrupt_main() does nothing."""
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            with StallWatchdog(lambda: 0, 0.3, poll=0.05) as dog:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, saved)
    assert dog.fired_


def test_the_watchdog_interrupts_the_thread_that_started_it():
    seen: dict[str, object] = {}

    def work() -> None:
        try:
            with StallWatchdog(lambda: 0, 0.3, poll=0.05) as dog:
                seen["dog"] = dog
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    time.sleep(0.01)
        except KeyboardInterrupt as exc:
            seen["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert isinstance(seen.get("error"), KeyboardInterrupt) and seen["dog"].fired_


def test_the_watchdog_stays_quiet_while_progress_moves_or_when_disabled():
    ticks = iter(range(10**9))
    with StallWatchdog(lambda: next(ticks), 0.3, poll=0.05) as moving:
        time.sleep(1.0)
    with StallWatchdog(lambda: 0, 0, poll=0.05) as disabled:
        time.sleep(0.5)
    assert not moving.fired_ and not moving.thread_.is_alive()
    assert not disabled.fired_ and disabled.thread_ is None


@pytest.mark.parametrize("value", [-1, -0.5, "soon", True, float("nan"), float("inf")])
def test_a_bad_stall_timeout_is_a_usage_error(model_paths, tmp_path, value):
    with pytest.raises(UsageError, match=r"^--stall-timeout must be a number of seconds, 0 or"):
        score_manifest(tmp_path / "m.csv", models=model_paths, out=tmp_path / "o",
                       stall_timeout=value)  # fmt: skip


def test_stall_timeout_on_the_command_line_and_in_the_config_file(model_paths, tmp_path, capsys):
    base = ["run", "--manifest", str(tmp_path / "m.csv"), "--models", model_paths[0]]
    base += ["--out", str(tmp_path / "s")]
    assert run_cli(cli, "genderscore scoring", [*base, "--stall-timeout", "-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stall-timeout must be a number of seconds" in err[0], err
    assert run_cli(cli, "genderscore scoring", [*base, "--stall-timeout", "soon"]) == 2
    assert "'soon' is not a valid float" in capsys.readouterr().err

    config = tmp_path / "nightly.toml"
    config.write_text(f"models = [{json.dumps(model_paths[0])}]\nstall_timeout = 90\n")
    assert read_config(config, cli.commands["run"])["stall_timeout"] == 90.0
    config.write_text('stall_timeout = "soon"\n')
    with pytest.raises(UsageError, match=r"stall_timeout must be a number, got 'soon'"):
        read_config(config, cli.commands["run"])
    config.write_text("stall_timeout = -1\n")
    assert run_cli(cli, "genderscore scoring", [*base, "--config", str(config)]) == 2
    assert "--stall-timeout must be a number of seconds" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
