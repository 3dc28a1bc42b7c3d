"""``convert_model``: a Keras model file to a checked ONNX file (the stage's public API).

Order of work: check options -> read ``run.json`` -> load safely -> inspect -> resolve
settings -> export -> parity on check images -> preprocessing check (labeled data) ->
optional INT8 (measure, gate) -> metadata -> atomic write. Nothing is written unless every
check passed (or ``force`` overrides a refusal other than parity).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from convert.checkdata import CheckImages, generated_images, load_check_images
from convert.errors import Int8GateError, PreprocessingMismatch
from convert.metadata import SCHEMA_VERSION, ModelMetadata, set_metadata
from convert.modecheck import ModeVerdict, group_of, judge_modes, mode_groups
from convert.options import ConvertOptions, Settings, check_options, resolve_settings
from convert.parity import ParityReport, compare_outputs, require_parity
from models.errors import DataError
from models.preprocessing import get_preprocessing
from models.runinfo import RUN_INFO_FILENAME, RunInfo, read_run_info, sha256_file
from models.versions import package_versions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConversionResult:
    """What was written and what the checks measured."""

    path: Path
    metadata: ModelMetadata
    parity: ParityReport
    preprocessing_check: ModeVerdict | None
    #: Speeds, chosen format and gate figures when ``int8`` was asked for, else None.
    int8: dict[str, Any] | None
    seconds: float


def convert_model(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: ConvertOptions | None = None,
    **kwargs: Any,
) -> ConversionResult:
    """Convert the Keras model at ``model`` (a ``.keras``/``.h5`` file, a SavedModel folder or a
    genderscore training run folder) to ONNX at ``out``.

    Options are a :class:`ConvertOptions` or its fields as keyword arguments
    (``preprocess="resnet50"``, ``class_names=("female", "male")``, ``int8=True``, ...).
    Raises :class:`~models.errors.UsageError` for bad options or inputs,
    :class:`~convert.errors.ParityError`, :class:`~convert.errors.PreprocessingMismatch` or
    :class:`~convert.errors.Int8GateError` when a check refuses.
    """
    started = time.perf_counter()
    opts = check_options(replace(options or ConvertOptions(), **kwargs))
    out = Path(out)
    model_path, run_info = _locate(Path(model))

    from convert.inspection import inspect_model
    from convert.loading import load_keras_model

    loaded = load_keras_model(model_path, unsafe_load=opts.unsafe_load)
    structure = inspect_model(loaded)
    settings = resolve_settings(opts, run_info, model_path, structure.input_size)
    head = structure.head(settings.positive_index)
    logger.info(
        "converting %s (%s, %s, head %s) at %dx%d with preprocessing %s (from %s)",
        model_path,
        loaded.format,
        structure.backbone,
        head.kind,
        *settings.input_size,
        settings.preprocessing,
        settings.sources["preprocessing"],
    )

    from convert.export import export_onnx

    proto = export_onnx(
        loaded, structure, head, settings.preprocessing, settings.input_size, opset=opts.opset
    )
    checks = _check_images(opts.check_data, settings, opts.check_limit)
    reference, keras_logit, onnx_prob, parity = _check_parity(
        proto, loaded, structure, head, settings, checks, opts.parity_tolerance
    )
    verdict = _check_preprocessing(reference, checks, settings, keras_logit, opts.force)
    metadata = _metadata(settings, structure, head, parity, verdict, model_path, loaded, opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    int8_info = None
    try:
        set_metadata(proto, metadata)
        _save(proto, tmp)
        if opts.int8:
            has_check_data = bool(opts.check_data)
            metadata, int8_info = _int8(
                tmp, metadata, settings, checks, onnx_prob, opts, has_check_data=has_check_data
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    logger.info("converted (%s) in %.1f s", _describe_quantization(metadata), seconds)
    return ConversionResult(out, metadata, parity, verdict, int8_info, seconds)


def _metadata(
    settings: Settings,
    structure: Any,
    head: Any,
    parity: Any,
    verdict: Any,
    model_path: Path,
    loaded: Any,
    opts: ConvertOptions,
) -> ModelMetadata:
    """What the ONNX file says of itself (docs/contracts.md: the model file)."""
    return ModelMetadata(
        schema_version=SCHEMA_VERSION,
        name=settings.name,
        backbone=structure.backbone,
        input_size=settings.input_size,
        class_names=settings.class_names,
        positive_class=settings.positive_class,
        preprocessing=settings.preprocessing,
        source_sha256=sha256_file(model_path),
        versions=_versions(loaded, opts.opset),
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        quantization=None,
        framing=settings.framing,
        extra={
            "head": head.as_dict(),
            "parity": parity.as_dict(),
            "preprocessing_spec": get_preprocessing(settings.preprocessing).as_dict(),
            "preprocessing_check": verdict.as_dict() if verdict else None,
            "source_file": model_path.name,
            "source_format": loaded.format,
            "settings_from": settings.sources,
        },
    )


def _check_parity(
    proto: Any,
    loaded: Any,
    structure: Any,
    head: Any,
    settings: Settings,
    checks: CheckImages,
    tolerance: float,
) -> tuple[Any, np.ndarray, np.ndarray, Any]:
    """Run the ONNX model and the Keras original on the check images; refuse a difference
    over ``tolerance``. Returns the Keras reference, its logits, the ONNX probabilities and
    the parity record."""
    from convert.export import onnx_session, run_onnx
    from convert.reference import KerasReference

    onnx_prob, onnx_logit = run_onnx(onnx_session(proto), checks.images)
    reference = KerasReference(loaded, structure, head)
    keras_out = reference.run(checks.images, settings.preprocessing)
    parity = require_parity(
        compare_outputs(
            keras_out.logit,
            keras_out.prob,
            onnx_logit,
            onnx_prob,
            tolerance=tolerance,
            source=checks.source,
        )
    )
    logger.info(
        "parity: max |logit difference| %.2g on %d %s images",
        parity.max_abs_logit_diff,
        parity.n_images,
        checks.source,
    )
    return reference, keras_out.logit, onnx_prob, parity


def _locate(model: Path) -> tuple[Path, RunInfo | None]:
    """The model file, and the ``run.json`` describing it (SHA-256 verified) if any."""
    if (
        model.is_dir()
        and (model / RUN_INFO_FILENAME).is_file()
        and not (model / "saved_model.pb").is_file()
    ):
        info = read_run_info(model)
        if info is None:
            raise DataError(f"{model / RUN_INFO_FILENAME} does not describe a model in {model}")
        return model / info.model_file, info
    if not model.exists():
        raise DataError(f"no such model file or folder: {model}")
    return model, read_run_info(model)


def _check_images(source: Path | None, settings: Settings, limit: int) -> CheckImages:
    if source is None:
        return generated_images(settings.input_size)
    return load_check_images(
        source,
        settings.input_size,
        settings.class_names,
        settings.positive_class,
        limit=limit,
        framing=settings.framing,
    )


def _check_preprocessing(
    reference: Any,
    checks: CheckImages,
    settings: Settings,
    declared_logit: np.ndarray,
    force: bool,
) -> ModeVerdict | None:
    """Score the labeled check images under every preprocessing; refuse a clearly worse one."""
    from sklearn.metrics import roc_auc_score

    if not checks.has_both_classes():
        logger.info(
            "preprocessing not checked against other modes: %s",
            "no labeled check images (give --check-data with class folders or a label column)"
            if not checks.labeled.any()
            else "the labeled check images hold only one class",
        )
        return None
    mask = checks.labeled
    images, labels = checks.images[mask], checks.labels[mask]
    declared = group_of(settings.preprocessing)
    aucs = {}
    for group in mode_groups():
        logit = declared_logit[mask] if group == declared else reference.run(images, group).logit
        aucs[group] = float(roc_auc_score(labels, np.nan_to_num(logit, nan=0.0)))
    neg, pos = checks.n_per_class
    verdict = judge_modes(settings.preprocessing, aucs, pos, neg)
    logger.info(
        "preprocessing check (AUC on %d labeled images): %s",
        len(labels),
        ", ".join(f"{k} {v:.3f}" for k, v in aucs.items()),
    )
    if verdict.refused:
        message = (
            f"--preprocess {settings.preprocessing} looks wrong for this model: on"
            f" {len(labels)} labeled check images it scores AUC {verdict.declared_auc:.3f},"
            f" while {verdict.describe(verdict.best)} scores AUC"
            f" {aucs[verdict.best]:.3f} (difference over {verdict.threshold:.3f});"
            f" convert with --preprocess {verdict.best}"
        )
        if not force:
            raise PreprocessingMismatch(message + ", or pass --force if you are sure")
        warnings.warn(message + " (kept because of --force)", stacklevel=3)
    return verdict


def _int8(
    fp32_path: Path,
    metadata: ModelMetadata,
    settings: Settings,
    checks: CheckImages,
    fp32_prob: np.ndarray,
    opts: ConvertOptions,
    *,
    has_check_data: bool,
) -> tuple[ModelMetadata, dict[str, Any]]:
    """Quantize, choose, gate; on success ``fp32_path`` is overwritten with the int8 model.

    ``auto`` gates the formats that pay, fastest first, and keeps the first that passes; when
    none pays or passes, the model stays fp32 and records why (U8S8 loses accuracy to
    saturation on CPUs without VNNI, where S8S8 or fp32 is then the answer). A format named
    with ``--int8-format`` that fails the gate is an error unless ``--force``."""
    from convert.export import onnx_session, run_onnx
    from convert.quantize import int8_gate, quantize_model

    calibration = load_check_images(
        opts.calibration,
        settings.input_size,
        settings.class_names,
        settings.positive_class,
        limit=opts.calibration_limit,
        framing=settings.framing,
    )
    if not has_check_data:
        # Generated images say nothing about accuracy: gate on the calibration images.
        checks = calibration
        fp32_prob = run_onnx(onnx_session(fp32_path), checks.images)[0]
    auto = opts.int8_format == "auto"
    formats = ["u8s8", "s8s8"] if auto else [opts.int8_format]
    with tempfile.TemporaryDirectory(prefix="genderscore-int8-") as work:
        workdir = Path(work)
        built = {}
        for fmt in formats:
            path = workdir / f"{fmt}.onnx"
            built[fmt] = (path, quantize_model(fp32_path, path, calibration.images, fmt, workdir))
        info: dict[str, Any] = {"requested": opts.int8_format}
        candidates = _ranked_by_speed(fp32_path, built, settings, info) if auto else formats
        chosen, gate = None, None
        for fmt in candidates:
            int8_prob = run_onnx(onnx_session(built[fmt][0]), checks.images)[0]
            gate = int8_gate(
                checks.labels,
                fp32_prob,
                int8_prob,
                max_auc_drop=opts.max_auc_drop,
                min_agreement=opts.min_agreement,
                source=checks.source if has_check_data else "calibration",
            )
            logger.info("int8 gate (%s): %s", fmt, gate.describe())
            if gate.passed or not auto or opts.force:
                chosen = fmt
                break
            info.setdefault("gate_refused", {})[fmt] = gate.as_dict()
        info["chosen"] = chosen or "fp32"
        if chosen is None:
            return _keep_fp32(fp32_path, metadata, info), info
        info["gate"] = gate.as_dict()
        if not gate.passed:
            if not opts.force:
                raise Int8GateError(
                    f"int8 ({chosen}) refused: {gate.describe()}. The model was not written:"
                    " convert without --int8 for fp32, or pass --force to write int8 anyway"
                )
            warnings.warn(
                f"int8 gate failed, written because of --force: {gate.describe()}", stacklevel=3
            )
            info["forced"] = True
        int8_path, settings_q = built[chosen]
        metadata = replace(metadata, quantization={**settings_q, **info})
        _write_with_metadata(int8_path, metadata, fp32_path)
    return metadata, info


def _ranked_by_speed(
    fp32_path: Path, built: dict[str, Any], settings: Settings, info: dict[str, Any]
) -> list[str]:
    """Time fp32 and each int8 build; the formats that pay, fastest first (speeds in ``info``)."""
    from convert.quantize import SPEED_BATCH, SPEED_THREADS, measure_speed, ranked_formats

    speeds = {"fp32": measure_speed(fp32_path, settings.input_size)}
    speeds |= {fmt: measure_speed(path, settings.input_size) for fmt, (path, _) in built.items()}
    info["speed_img_per_s"] = {k: round(v, 1) for k, v in speeds.items()}
    info["speed_batch"] = SPEED_BATCH
    info["speed_threads"] = SPEED_THREADS
    logger.info(
        "int8 speed at batch %d, %d thread(s): %s img/s",
        SPEED_BATCH,
        SPEED_THREADS,
        ", ".join(f"{k} {v:.0f}" for k, v in speeds.items()),
    )
    ranked = ranked_formats(speeds)
    if not ranked:
        logger.warning(
            "int8 does not pay for this model (%s): keeping fp32",
            ", ".join(f"{k} {v:.0f} img/s" for k, v in info["speed_img_per_s"].items()),
        )
    return ranked


def _keep_fp32(fp32_path: Path, metadata: ModelMetadata, info: dict[str, Any]) -> ModelMetadata:
    """The fp32 model stays, with the int8 decision in its metadata."""
    refused = info.get("gate_refused", {})
    if refused:
        logger.warning(
            "int8 refused by the gate for %s: keeping fp32; --int8-format FORMAT --force "
            "writes one anyway",
            "; ".join(f"{fmt} (agreement {g['agreement']:.2%})" for fmt, g in refused.items()),
        )
    metadata = replace(metadata, extra={**metadata.extra, "int8_decision": info})
    _write_with_metadata(fp32_path, metadata, fp32_path)
    return metadata


def _write_with_metadata(source: Path, metadata: ModelMetadata, dest: Path) -> None:
    import onnx

    model = onnx.load(str(source))
    set_metadata(model, metadata)
    _save(model, dest)


def _save(model: Any, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path))


def _versions(loaded: Any, opset: int) -> dict[str, str]:
    packages = ("genderscore", "tensorflow", "tf2onnx", "onnx", "onnxruntime")
    return {
        "opset": str(opset),
        loaded.library: loaded.library_version,
        **package_versions(packages),
    }


def _describe_quantization(metadata: ModelMetadata) -> str:
    q = metadata.quantization
    return "fp32" if q is None else f"int8 {q.get('scheme', '')}"
