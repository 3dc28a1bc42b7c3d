"""The command line as users meet it: one entry point, groups per stage, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

STAGES = ["models", "convert", "scoring", "ensemble"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_root_help_lists_every_stage():
    out = run(sys.executable, "-m", "ensemble.app", "--help")
    assert out.returncode == 0
    for stage in STAGES + ["demo"]:
        assert stage in out.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_python_dash_m_runs_the_same_group(stage: str):
    out = run(sys.executable, "-m", stage, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage: python -m " + stage in out.stdout


def test_bad_option_is_one_line_with_exit_2():
    out = run(sys.executable, "-m", "ensemble.app", "scoring", "--no-such-flag")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "No such option" in lines[0] and "--help" in lines[0]


def test_scoring_and_ensemble_import_without_tensorflow():
    code = (
        "import sys, scoring.cli, ensemble.cli, ensemble.app\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = run(sys.executable, "-c", code)
    assert out.returncode == 0, out.stderr
