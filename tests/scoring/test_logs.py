"""Log hygiene: Ray's console handlers write to the stderr of the moment (no "--- Logging error
--- ValueError: I/O operation on closed file" once a test runner closed the stream they were
made with), and the C++ lines of Ray that are no problem of a run are dropped from file
descriptor 2 while every other line passes."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from scoring.internal import logs

REPO = Path(__file__).resolve().parents[2]
#: As Ray 2.60's driver prints it, once per scorer actor.
CONSTRUCTOR_LINE = (
    "[2026-12-02 09:49:21,660 E 4591 4591] core_worker.cc:2465: Actor with class name: "
    "'MapWorker(MapBatches(TalliedScorer))' and ID: '7266f79402377baf866829e601000000' has "
    "constructor arguments in the object store and max_restarts > 0. If the arguments in the "
    "object store go out of scope or are lost, the actor restart will fail. See "
    "https://github.com/ray-project/ray/issues/53727 for more details."
)
REAL_PROBLEM = (
    "[2026-12-02 10:51:05,390 E 27114 27163] core_worker.cc:609: :info_message: Attempting "
    "to recover 2 lost objects by resubmitting their tasks"
)


def test_only_the_known_harmless_ray_lines_are_noise():
    assert logs.is_noise(CONSTRUCTOR_LINE)
    assert not logs.is_noise(REAL_PROBLEM)
    assert not logs.is_noise("core_worker.cc:1109: The core worker has already been shutdown")


def test_rays_console_handler_writes_to_the_current_stderr(capsys):
    """Ray's PlainRayHandler keeps the sys.stderr it was made with; made while a test runner's
    stream was sys.stderr, and that stream closed, Ray's next line was a logging error."""
    from ray._private.log import PlainRayHandler

    logger = logging.getLogger("ray.data")
    saved = sys.stderr
    sys.stderr = io.StringIO()  # as pytest's capture of one test
    handler = PlainRayHandler()
    closed, sys.stderr = sys.stderr, saved
    closed.close()
    logger.addHandler(handler)
    try:
        logs.follow_stderr()
        logger.warning("a line after the stream it was made with closed")
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "a line after the stream it was made with closed" in err
    assert "Logging error" not in err and "closed file" not in err


FD_WRITER = textwrap.dedent(
    """
    import os, sys
    from scoring.internal import logs

    logs.configure("text")
    assert logs.filter_native_stderr()
    os.write(2, (sys.argv[1] + "\\n").encode())  # as Ray's C++ core writes, past Python
    os.write(2, (sys.argv[2] + "\\n").encode())
    print("a Python line", file=sys.stderr)
    """
)


def test_harmless_cpp_lines_are_dropped_from_fd_2_and_the_rest_passes(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(FD_WRITER)
    done = subprocess.run(
        [sys.executable, str(script), CONSTRUCTOR_LINE, REAL_PROBLEM],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert REAL_PROBLEM in lines and "a Python line" in lines
    assert not [line for line in lines if "constructor arguments" in line], lines
