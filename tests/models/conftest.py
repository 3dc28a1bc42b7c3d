"""Trained runs shared by the models tests: each backbone trained once per session, small
(32 px, random or file weights, one epoch) on the synthetic images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

SIZE = 32


@pytest.fixture(scope="session")
def base_weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file for an EfficientNetB0 base at 32 px, as `--weights PATH` takes it."""
    from models.registry import get_backbone

    path = tmp_path_factory.mktemp("weights") / "efficientnetb0_base.weights.h5"
    base = get_backbone("efficientnetb0").constructor()(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)
    )
    base.save_weights(path)
    return path


@pytest.fixture(scope="session")
def trained(
    synthetic_dir: Path, base_weights_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """backbone name -> RUN_DIR, trained on first use:

    - mobilenetv2: through the CLI, CSV layout, focal loss, balanced class weights,
      oversampling, BatchNorm momentum 0 (statistics from data, so outputs vary);
    - resnet50: Python API, train/val folders, from scratch, BatchNorm momentum 0;
    - efficientnetb0: Python API, class folders + validation split, base weights from a
      file, so both phases run (frozen base, then the top layers fine-tuned).
    """
    runs: dict[str, Path] = {}

    def get(backbone: str) -> Path:
        if backbone in runs:
            return runs[backbone]
        out = tmp_path_factory.mktemp(f"run_{backbone}")
        if backbone == "mobilenetv2":
            from click.testing import CliRunner

            from models.cli import cli

            result = CliRunner().invoke(
                cli,
                [
                    "train",
                    "--data", str(synthetic_dir / "train.csv"),
                    "--out", str(out),
                    "--backbone", "mobilenetv2",
                    "--image-size", str(SIZE),
                    "--weights", "none",
                    "--epochs", "1",
                    "--batch-size", "16",
                    "--loss", "focal",
                    "--focal-alpha", "0.4",
                    "--class-weight", "balanced",
                    "--oversample",
                    "--bn-momentum", "0",
                    "--val-split", "0.25",
                    "--seed", "3",
                    "--quiet",
                ],
            )  # fmt: skip
            assert result.exit_code == 0, result.output + repr(result.exception)
            assert "validation: accuracy" in result.output
        else:
            from models.train import TrainConfig, train

            if backbone == "resnet50":
                cfg = TrainConfig(
                    data=str(synthetic_dir), out=str(out), backbone="resnet50",
                    image_size=SIZE, weights="none", epochs=1, batch_size=16,
                    bn_momentum=0.0, verbose=0,
                )  # fmt: skip
            else:
                cfg = TrainConfig(
                    data=str(synthetic_dir / "train"), out=str(out), backbone=backbone,
                    image_size=SIZE, weights=str(base_weights_file), epochs=1,
                    fine_tune_epochs=1, fine_tune_layers=12, batch_size=16, verbose=0,
                )  # fmt: skip
            train(cfg)
        runs[backbone] = out
        return out

    return get
