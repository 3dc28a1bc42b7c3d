"""`genderscore convert`."""

from __future__ import annotations

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Convert a Keras model to ONNX."""
