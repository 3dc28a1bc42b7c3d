"""Parity between the Keras model and the ONNX session on the same uint8 images.

Logits are compared (probabilities saturate and hide differences): the check fails when
``|logit_onnx - logit_keras| > tolerance * max(1, |logit_keras|)``, i.e. 1e-4 absolute for
logits up to 1 and 1e-4 relative above (float32 networks such as ResNet50 differ by a few
1e-5 relative between runtimes; an absolute bound alone would fail sound conversions of
confident models). The ONNX probability must also match the Keras model's own output, which
checks the head was linearised correctly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from convert.errors import ParityError

DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParityReport:
    n_images: int
    source: str
    max_abs_logit_diff: float
    max_scaled_logit_diff: float
    max_abs_prob_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return (
            self.max_scaled_logit_diff <= self.tolerance
            and self.max_abs_prob_diff <= self.tolerance
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


def compare_outputs(
    keras_logit: np.ndarray,
    keras_prob: np.ndarray,
    onnx_logit: np.ndarray,
    onnx_prob: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    source: str = "",
) -> ParityReport:
    """Measure the differences (pure; raises nothing)."""
    k_logit = np.asarray(keras_logit, np.float64)
    o_logit = np.asarray(onnx_logit, np.float64)
    if k_logit.shape != o_logit.shape or len(k_logit) == 0:
        raise ValueError(f"cannot compare logits of shapes {k_logit.shape} and {o_logit.shape}")
    diff = np.abs(o_logit - k_logit)
    if not np.isfinite(diff).all():
        diff = np.where(np.isfinite(diff), diff, np.inf)
    scaled = diff / np.maximum(1.0, np.abs(k_logit))
    prob_diff = np.abs(np.asarray(onnx_prob, np.float64) - np.asarray(keras_prob, np.float64))
    return ParityReport(
        n_images=len(k_logit),
        source=source,
        max_abs_logit_diff=float(diff.max()),
        max_scaled_logit_diff=float(scaled.max()),
        max_abs_prob_diff=float(np.nan_to_num(prob_diff, nan=np.inf).max()),
        tolerance=tolerance,
    )


def require_parity(report: ParityReport) -> ParityReport:
    """Raise :class:`ParityError` with the measured differences unless ``report`` passed."""
    if not report.passed:
        raise ParityError(
            f"parity check failed on {report.n_images} {report.source} images: ONNX logits"
            f" differ from Keras by up to {report.max_abs_logit_diff:.3g}"
            f" ({report.max_scaled_logit_diff:.3g} scaled by max(1, |logit|)) and"
            f" probabilities by up to {report.max_abs_prob_diff:.3g}; allowed"
            f" {report.tolerance:g}. The ONNX file was not written"
        )
    return report
