"""INT8: ONNX Runtime static quantization (QDQ, per-channel weights), measured and gated.

Two formats are tried: ``u8s8`` (uint8 activations, int8 weights: the fast path of ORT's
VNNI kernels, which fuses every convolution) and ``s8s8`` (quantize_static's default, which
leaves some convolutions in fp32 with converts around them). ``auto`` measures both against
fp32 on the model's own input size and keeps the fastest, or fp32 when int8 does not pay
(EfficientNetB0's element-wise ops dominate its time). The preprocessing and the head stay
fp32: they are cheap and they set the input range and the logit's precision.

The gate compares int8 with fp32 on check images: AUC drop (labeled images) and label
agreement at 0.5; over the bound the model is not written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from convert.export import HEAD_SCOPE, INPUT_NAME, PREPROCESS_SCOPE, onnx_session

INT8_FORMATS = ("u8s8", "s8s8")
INT8_CHOICES = ("auto", *INT8_FORMATS)
DEFAULT_MAX_AUC_DROP = 0.005
DEFAULT_MIN_AGREEMENT = 0.99
#: int8 must be at least this much faster than fp32 to be kept by ``auto``.
MIN_SPEEDUP = 1.15
SPEED_BATCH = 8
#: ORT threads ``auto`` times with: the scorer's layout is one single-thread actor per CPU, and
#: a model's int8 gain differs with threads (EfficientNetB0: ~1.2-1.4x at 1, 0.9x at 2).
SPEED_THREADS = 1
CALIBRATION_BATCH = 8


def quantize_model(
    fp32_path: Path, out_path: Path, calibration: np.ndarray, fmt: str, workdir: Path
) -> dict[str, Any]:
    """Write the int8 model for ``fmt`` to ``out_path``; return its settings for the metadata."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if fmt not in INT8_FORMATS:
        raise ValueError(f"unknown int8 format {fmt!r}")
    prepared = workdir / "prepared.onnx"
    if not prepared.exists():
        # Shape inference and fp32 graph fusions first, as ORT's quantization guide advises.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    exclude = _excluded_nodes(prepared)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {INPUT_NAME: calibration[i : i + CALIBRATION_BATCH]}
                for i in range(0, len(calibration), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    activation = QuantType.QUInt8 if fmt == "u8s8" else QuantType.QInt8
    quantize_static(
        str(prepared),
        str(out_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=activation,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return {
        "format": "QDQ",
        "scheme": fmt,
        "activation_type": "uint8" if fmt == "u8s8" else "int8",
        "weight_type": "int8",
        "per_channel": True,
        "calibration_method": "MinMax",
        "calibration_images": int(len(calibration)),
        "fp32_nodes": sorted({n.split("/")[0] for n in exclude}),
    }


def _excluded_nodes(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    prefixes = (f"{PREPROCESS_SCOPE}/", f"{HEAD_SCOPE}/")
    return [n.name for n in model.graph.node if n.name.startswith(prefixes)]


def measure_speed(
    model_path: Path,
    size: tuple[int, int],
    *,
    batch: int = SPEED_BATCH,
    threads: int = SPEED_THREADS,
    seconds: float = 2.0,
) -> float:
    """Images per second of a CPU session of ``threads`` threads at ``batch`` (median batch
    time, after warm-up)."""
    session = onnx_session(model_path, threads=threads)
    images = np.random.default_rng(0).integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    for _ in range(2):
        session.run(None, {INPUT_NAME: images})
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        session.run(None, {INPUT_NAME: images})
        times.append(time.perf_counter() - start)
    return batch / float(np.median(times))


def ranked_formats(speeds: dict[str, float], min_speedup: float = MIN_SPEEDUP) -> list[str]:
    """The int8 formats that beat ``fp32`` by ``min_speedup``, fastest first."""
    candidates = {k: v for k, v in speeds.items() if k in INT8_FORMATS}
    if not candidates:
        raise ValueError("no int8 speeds measured")
    ranked = sorted(candidates, key=candidates.__getitem__, reverse=True)
    return [k for k in ranked if candidates[k] >= min_speedup * speeds["fp32"]]


def choose_format(speeds: dict[str, float], min_speedup: float = MIN_SPEEDUP) -> str | None:
    """The fastest int8 format when it beats ``fp32`` by ``min_speedup``, else None (keep fp32)."""
    ranked = ranked_formats(speeds, min_speedup)
    return ranked[0] if ranked else None


@dataclass(frozen=True)
class GateResult:
    n: int
    n_labeled: int
    agreement: float
    auc_fp32: float | None
    auc_int8: float | None
    max_auc_drop: float
    min_agreement: float
    source: str

    @property
    def auc_drop(self) -> float | None:
        if self.auc_fp32 is None or self.auc_int8 is None:
            return None
        return self.auc_fp32 - self.auc_int8

    @property
    def passed(self) -> bool:
        drop = self.auc_drop
        return self.agreement >= self.min_agreement and (drop is None or drop <= self.max_auc_drop)

    def describe(self) -> str:
        auc = (
            f"AUC {self.auc_fp32:.4f} fp32 -> {self.auc_int8:.4f} int8 (drop"
            f" {self.auc_drop:.4f}, allowed {self.max_auc_drop:g})"
            if self.auc_drop is not None
            else "AUC not measured (no labeled check images)"
        )
        return (
            f"{auc}; label agreement at 0.5 {self.agreement:.2%} (needed"
            f" {self.min_agreement:.2%}) on {self.n} {self.source} images"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "auc_drop": self.auc_drop, "passed": self.passed}


def int8_gate(
    labels: np.ndarray,
    p_fp32: np.ndarray,
    p_int8: np.ndarray,
    *,
    max_auc_drop: float = DEFAULT_MAX_AUC_DROP,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    source: str = "check",
) -> GateResult:
    """Compare int8 with fp32 probabilities (labels: 1/0, -1 unknown). Pure."""
    p_fp32 = np.asarray(p_fp32, dtype=np.float64)
    p_int8 = np.asarray(p_int8, dtype=np.float64)
    labels = np.asarray(labels)
    agreement = float(np.mean((p_fp32 >= 0.5) == (p_int8 >= 0.5)))
    known = labels >= 0
    auc_fp32 = auc_int8 = None
    if known.any() and len(np.unique(labels[known])) == 2:
        auc_fp32 = float(roc_auc_score(labels[known], p_fp32[known]))
        auc_int8 = float(roc_auc_score(labels[known], p_int8[known]))
    return GateResult(
        n=len(p_fp32),
        n_labeled=int(known.sum()),
        agreement=agreement,
        auc_fp32=auc_fp32,
        auc_int8=auc_int8,
        max_auc_drop=max_auc_drop,
        min_agreement=min_agreement,
        source=source,
    )
