"""The ``genderscore`` command: one group per stage, loaded only when used.

It lives in the last stage because it is the one piece that knows every stage; each group is
imported lazily so ``genderscore scoring ...`` never imports TensorFlow.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

import click

from models.cli_support import main_for

_GROUPS = {
    "models": ("models.cli", "cli", "Build, train, evaluate and predict with Keras classifiers."),
    "convert": ("convert.cli", "cli", "Convert a Keras model to ONNX, preprocessing baked in."),
    "scoring": ("scoring.cli", "cli", "Score a manifest of images with ONNX models on Ray."),
    "ensemble": ("ensemble.cli", "cli", "Combine model scores, tune thresholds, apply, evaluate."),
    "demo": ("ensemble.demo", "demo", "Run the whole pipeline on a small embedded default."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_GROUPS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _GROUPS:
            return None
        module, attr, _ = _GROUPS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing every stage.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in _GROUPS.items()])


def _version() -> str:
    try:
        return version("genderscore")
    except PackageNotFoundError:
        return "unknown"


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="genderscore")
def cli() -> None:
    """genderscore: score face images nightly with an ensemble of ONNX gender classifiers.

    Stages run in order: models (train in Keras) -> convert (to ONNX) -> scoring (Ray batch
    job to Parquet) -> ensemble (combine, tune thresholds, apply).
    """


main = main_for(cli, "genderscore")

if __name__ == "__main__":
    main()
