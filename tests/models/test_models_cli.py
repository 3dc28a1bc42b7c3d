"""`genderscore models ...` end to end: train (in the shared fixture), evaluate, predict, and
bad arguments as one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from models.cli import cli
from models.cli_support import run_cli


def test_every_option_has_help():
    for name, command in cli.commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"models {name} {param.opts[0]} has no help"


@pytest.mark.slow  # trains a model (the shared `trained` fixture)
def test_evaluate_and_predict_commands(trained, synthetic_dir, tmp_path):
    model = str(trained("mobilenetv2") / "model.keras")
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "evaluate",
            "--model",
            model,
            "--data",
            str(synthetic_dir / "val.csv"),
            "--out",
            str(tmp_path / "ev"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["n"] == 48 and metrics["preprocessing"] == "mobilenet_v2"
    assert (tmp_path / "ev" / "roc.png").is_file()

    images = [
        str(synthetic_dir / "val" / "female" / "female_00000.jpg"),
        str(tmp_path / "gone.jpg"),
    ]
    result = runner.invoke(
        cli,
        [
            "predict",
            *images,
            "--model",
            model,
            "--format",
            "json",
            "--show",
            str(tmp_path / "p.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["label"] in ("female", "male") and 0.5 <= lines[0]["confidence"] <= 1
    assert "p_male" in lines[0] and lines[1]["error_code"] == "not_found"
    assert (tmp_path / "p.png").is_file()


def test_bad_arguments_give_one_line_and_exit_2(synthetic_dir, tmp_path, capsys):
    code = run_cli(
        cli,
        "genderscore models",
        ["train", "--data", str(synthetic_dir), "--out", str(tmp_path), "--backbone", "vgg16"],
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "vgg16" in err
    code = run_cli(
        cli,
        "genderscore models",
        [
            "train",
            "--data",
            str(tmp_path / "nothing"),
            "--out",
            str(tmp_path / "r"),
            "--weights",
            "none",
        ],
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "data not found" in err
    code = run_cli(
        cli,
        "genderscore models",
        ["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "r"), "--positive", "boy"],
    )
    err = capsys.readouterr().err
    assert code == 2 and "--positive 'boy' is not a class" in err and err.count("\n") == 1


def test_console_script_reports_a_bad_option_value(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "models",
            "train",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "r"),
            "--epochs",
            "0",
            "--weights",
            "none",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "python -m models: error: --epochs must be an integer >= 1, got 0"
