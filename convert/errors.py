"""Why a conversion refused to write a model (the exit codes come from models.errors)."""

from __future__ import annotations

from models.errors import GenderscoreError, UsageError


class ParityError(GenderscoreError):
    """The ONNX model does not compute what the Keras model computes (exit 1)."""


class PreprocessingMismatch(UsageError):
    """The labeled check data says another preprocessing fits the model clearly better (exit 2)."""


class Int8GateError(GenderscoreError):
    """The INT8 model departs from fp32 beyond the allowed bound (exit 1)."""
