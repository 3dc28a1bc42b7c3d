"""Evaluate a Keras classifier on labeled images: metrics, figures, misclassified files.

Writes to ``out``: ``metrics.json``, ``predictions.csv``, ``misclassified.csv``,
``confusion_matrix.png``, ``roc.png`` and, on request, copies of the misclassified images
under ``misclassified/<true>_as_<pred>/``. Metrics come from :mod:`models.metrics`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.data import BAD_IMAGE_POLICIES, decode_samples, discover_eval_data
from models.errors import DataError
from models.inference import ModelInfo, load_for_inference, positive_scores, resolve_model_info
from models.internal.validation import check_choice, check_positive_int, check_threshold
from models.jsonable import jsonable
from models.metrics import binary_metrics
from models.probabilities import decide

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Metrics plus the per-image table and the files written."""

    metrics: dict[str, Any]
    info: ModelInfo
    paths: list[str]
    true_labels: list[str]
    scores: np.ndarray
    predicted_labels: list[str]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def misclassified(self) -> list[int]:
        return [
            i
            for i, (t, p) in enumerate(zip(self.true_labels, self.predicted_labels, strict=True))
            if t != p
        ]


def evaluate(
    model: str | os.PathLike[str] | Any,
    data: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    split: str | None = None,
    preprocessing: str | None = None,
    class_names: str | tuple[str, str] | None = None,
    positive: str | None = None,
    image_size: int | str | tuple[int, int] | None = None,
    threshold: float = 0.5,
    batch_size: int = 32,
    bad_images: str = "fail",
    copy_misclassified: bool = False,
    workers: int | None = None,
    faces: str | None = None,
) -> EvaluationResult:
    """Score every labeled image in ``data`` (folder or CSV, see :mod:`models.data`) and
    compute accuracy, per-class precision/recall/F1/accuracy, macro and weighted averages and
    ROC AUC at ``threshold``. With ``out``, write the files listed in the module docstring."""
    check_positive_int(batch_size, "--batch-size")
    check_choice(bad_images, "--bad-images", BAD_IMAGE_POLICIES)
    check_threshold(threshold)
    samples, where = discover_eval_data(data, split=split)
    keras_model, model_path = load_for_inference(model)
    info = resolve_model_info(
        model_path,
        keras_model,
        preprocessing=preprocessing,
        class_names=class_names,
        positive=positive,
        image_size=image_size,
        data_class_names=sorted({s.label for s in samples}),
        faces=faces,
    )
    unknown = sorted({s.label for s in samples} - set(info.class_names))
    if unknown:
        raise DataError(
            f"evaluation data {where} has class(es) {unknown} the model does not know"
            f" (it knows {', '.join(info.class_names)})"
        )
    decoded = decode_samples(
        samples,
        info.image_size,
        info.positive_class,
        bad_images=bad_images,
        workers=workers,
        what=f"evaluation data {where}",
        framing=info.framing,
    )
    scores = positive_scores(keras_model, decoded, info, batch_size)
    negative, pos = info.target_names
    predicted = decide(scores, threshold, pos, negative).tolist()
    metrics = binary_metrics(decoded.targets, scores, threshold, class_names=info.target_names)
    metrics.update(
        {
            "model": str(model_path) if model_path is not None else None,
            "data": where,
            "preprocessing": info.preprocessing,
            "image_size": list(info.image_size),
            "framing": info.framing.to_dict(),
            "positive_class": info.positive_class,
            "model_info_source": info.source,
            "skipped_images": [
                {"path": b.path, "code": b.code, "message": b.message} for b in decoded.bad
            ],
        }
    )
    result = EvaluationResult(
        metrics=metrics,
        info=info,
        paths=decoded.paths,
        true_labels=decoded.labels,
        scores=scores,
        predicted_labels=predicted,
    )
    if out is not None:
        result.files = write_evaluation(result, Path(out), copy_misclassified=copy_misclassified)
    return result


def write_evaluation(
    result: EvaluationResult, out: Path, *, copy_misclassified: bool = False
) -> dict[str, Path]:
    """Write metrics.json, predictions.csv, misclassified.csv and the figures to ``out``."""
    import pandas as pd

    from models.plots import plot_confusion_matrix, plot_roc

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    info = result.info
    table = pd.DataFrame(
        {
            "path": result.paths,
            "true_label": result.true_labels,
            "predicted_label": result.predicted_labels,
            f"p_{info.positive_class}": result.scores,
        }
    )
    table["correct"] = table["true_label"] == table["predicted_label"]
    files["predictions"] = out / "predictions.csv"
    table.to_csv(files["predictions"], index=False)
    wrong = table[~table["correct"]]
    files["misclassified"] = out / "misclassified.csv"
    wrong.drop(columns="correct").to_csv(files["misclassified"], index=False)
    files["metrics"] = out / "metrics.json"
    files["metrics"].write_text(json.dumps(jsonable(result.metrics), indent=2) + "\n")
    files["confusion_matrix"] = plot_confusion_matrix(
        result.metrics["confusion_matrix"], info.target_names, out / "confusion_matrix.png"
    )
    targets = np.array([int(t == info.positive_class) for t in result.true_labels])
    if 0 < targets.sum() < len(targets):
        files["roc"] = plot_roc({"model": (targets, result.scores)}, out / "roc.png")
    else:
        log.warning("ROC curve not drawn: the data holds only one class")
    if copy_misclassified:
        root = out / "misclassified"
        if root.exists():
            shutil.rmtree(root)  # a previous evaluation's copies would mix with these
        for row in wrong.itertuples(index=False):
            folder = root / f"{row.true_label}_as_{row.predicted_label}"
            folder.mkdir(parents=True, exist_ok=True)
            src = Path(row.path)
            dest = folder / src.name
            n = 1
            while dest.exists():  # same file name from different folders
                dest = folder / f"{src.stem}_{n}{src.suffix}"
                n += 1
            shutil.copy2(src, dest)
        files["misclassified_dir"] = root
    return files


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short human-readable summary."""
    lines = [
        f"images {metrics['n']}  threshold {metrics['threshold']:.3f}  "
        f"accuracy {metrics['accuracy']:.4f}  ROC AUC {metrics['roc_auc']:.4f}",
        f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'accuracy':>10}{'support':>9}",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(
            f"{name:<12}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}"
            f"{m['accuracy']:>10.4f}{m['support']:>9d}"
        )
    lines.append(
        f"{'macro':<12}{metrics['macro_precision']:>10.4f}{metrics['macro_recall']:>10.4f}"
        f"{metrics['macro_f1']:>10.4f}"
    )
    lines.append(
        f"{'weighted':<12}{metrics['weighted_precision']:>10.4f}"
        f"{metrics['weighted_recall']:>10.4f}{metrics['weighted_f1']:>10.4f}"
    )
    return "\n".join(lines)
