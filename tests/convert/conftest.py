"""Session fixtures of the convert tests (builders in convert_builders.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from convert_builders import build_tf_keras_h5


@pytest.fixture(scope="session")
def h5_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """name -> (legacy .h5 path, preprocessing): the three backbones, both head kinds,
    Sequential and functional, the modes the keras fixtures do not cover."""
    root = tmp_path_factory.mktemp("h5")
    return {
        "mobilenetv2_seq_softmax": (
            build_tf_keras_h5(
                root / "mnv2.h5", "mobilenetv2", "rescale", style="sequential", units=2, c=0.02
            ),
            "rescale",
        ),
        "efficientnetb0_func_sigmoid": (
            build_tf_keras_h5(
                root / "effnet.h5", "efficientnetb0", "none", style="functional", units=1
            ),
            "none",
        ),
        "resnet50_seq_activation": (
            build_tf_keras_h5(
                root / "resnet.h5",
                "resnet50",
                "mobilenet_v2",
                style="sequential",
                units=2,
                separate_activation=True,
                c=0.005,
            ),
            "mobilenet_v2",
        ),
    }
