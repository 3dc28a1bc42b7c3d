"""``run_demo``: the whole pipeline on a small embedded default, as a thin script over each
stage's public API (models.train -> convert.convert_model -> scoring.run.score_manifest ->
ensemble.tune / evaluation), timing every step.

OUT holds (see the README's demo section)::

    data/            images (synthetic only) and the lists train_val.csv, val.csv, test.csv
    runs/<backbone>/ training runs          models/<backbone>.onnx  converted models
    val_scores/      validation set scored by every model (what the ensemble is tuned on)
    ensemble.json    the tuned ensemble     report/index.html        its tuning report
    manifest.csv     the test images        scores/                  manifest scored with it
    demo.json        settings, step times and headline figures
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ensemble.demo_data import DemoData, sampled_data, synthetic_data
from models.errors import UsageError
from models.framing import parse_face_mode
from models.registry import BACKBONE_NAMES

log = logging.getLogger(__name__)

#: Backbones trained by default: the three the teams use, smallest first.
DEMO_BACKBONES = ("mobilenetv2", "efficientnetb0", "resnet50")
#: Defaults measured to finish within 5 minutes on 2 CPU cores (docs/benchmarks.md, The demo).
DEFAULT_IMAGES = 200
DEFAULT_IMAGE_SIZE = 40
DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 32
#: A small head: the demo's bases are small and trained from scratch.
HEAD_UNITS = (32,)
MIN_IMAGE_SIZE = 32  # models.build refuses smaller inputs
MAX_IMAGE_SIZE = 224
#: Marks a folder as a demo's, so --force only ever deletes a previous demo.
MARKER = ".genderscore-demo"

T = TypeVar("T")


@dataclass(frozen=True)
class DemoConfig:
    """Everything ``genderscore demo`` accepts."""

    out: Path = Path("genderscore-demo")
    data: Path | None = None
    #: Training images per class: generated, or sampled at most from ``data``.
    images: int = DEFAULT_IMAGES
    image_size: int = DEFAULT_IMAGE_SIZE
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    backbones: tuple[str, ...] = DEMO_BACKBONES
    objective: str = "eer"
    seed: int = 0
    force: bool = False
    n_boot: int = 1000
    num_workers: int | None = None
    #: Forward Ray workers' logs to this process (off: the demo prints one line per step).
    ray_logs: bool = False
    #: Face framing the models are trained (and so scored) with; needs ``data`` of photos.
    faces: str = "off"


@dataclass
class Step:
    title: str
    seconds: float = 0.0
    #: CPU time of this process (training and conversion run here; Ray's workers do not): on
    #: a shared machine it says what the step costs when wall time does not.
    cpu_seconds: float = 0.0
    detail: str = ""


@dataclass
class DemoResult:
    """Where everything is, how long each step took, and the headline figures."""

    out: Path
    data: DemoData
    steps: list[Step]
    ensemble: Path
    report: Path
    scores: Path
    summary: Path
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: 1/5/15-minute load averages when the demo started: its times mean little on a busy box.
    load_at_start: tuple[float, ...] = ()


class Progress:
    """Told when each step starts and ends (the CLI prints them; the default is silent)."""

    def start(self, index: int, total: int, title: str) -> None:
        pass

    def end(self, index: int, total: int, step: Step) -> None:
        pass


def check_demo_config(cfg: DemoConfig) -> DemoConfig:
    """One UsageError naming the option, before any work."""
    if not MIN_IMAGE_SIZE <= cfg.image_size <= MAX_IMAGE_SIZE:
        raise UsageError(
            f"--image-size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} px, "
            f"got {cfg.image_size}"
        )
    if cfg.images < 4:
        raise UsageError(f"--images must be at least 4 per class, got {cfg.images}")
    if cfg.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if not cfg.backbones:
        raise UsageError("--backbones names no backbone: give e.g. mobilenetv2,resnet50")
    unknown = [b for b in cfg.backbones if b not in BACKBONE_NAMES]
    if unknown or len(set(cfg.backbones)) != len(cfg.backbones):
        raise UsageError(
            f"--backbones {','.join(cfg.backbones)}: each of {', '.join(BACKBONE_NAMES)} "
            "at most once"
        )
    from ensemble.thresholds import parse_objective

    parse_objective(cfg.objective)
    if parse_face_mode(cfg.faces) != "off" and cfg.data is None:
        raise UsageError(
            f"--faces {cfg.faces}: the synthetic images hold no faces; give --data with a "
            "labeled folder of real photos, or drop --faces"
        )
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise UsageError(
            f"--data {cfg.data} is not a folder: give a folder with train/<class>/ and "
            "val/<class>/ image folders (e.g. ../shared/data/utkface)"
        )
    return cfg


def prepare_out(out: Path, force: bool) -> Path:
    """An empty OUT marked as a demo's. A previous demo there is replaced only with ``force``;
    a folder holding anything else is never touched."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a folder for the demo")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UsageError(
                f"--out {out} is not empty and holds no demo: choose another --out "
                "(--force only replaces a previous demo's folder)"
            )
        if not force:
            raise UsageError(
                f"--out {out} already holds a demo: pass --force to start afresh there, "
                "or choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by genderscore demo; --force replaces this folder\n")
    return out


def run_demo(cfg: DemoConfig, progress: Progress | None = None) -> DemoResult:
    """Run every step (see the module docstring) and write ``OUT/demo.json``."""
    cfg = check_demo_config(cfg)
    progress = progress or Progress()
    started = time.perf_counter()
    load_at_start = _load_average()
    out = prepare_out(Path(cfg.out), cfg.force)
    titles = (
        ["data"]
        + [f"train {b}" for b in cfg.backbones]
        + [f"convert {b}" for b in cfg.backbones]
        + ["score val", "tune", "manifest", "score manifest", "evaluate"]
    )
    steps: list[Step] = []

    def step(fn: Callable[[], tuple[T, str]]) -> T:
        index = len(steps) + 1
        s = Step(titles[index - 1])
        progress.start(index, len(titles), s.title)
        t0, cpu0 = time.perf_counter(), time.process_time()
        value, s.detail = fn()
        _release_keras_graphs()
        s.seconds = time.perf_counter() - t0
        s.cpu_seconds = time.process_time() - cpu0
        steps.append(s)
        progress.end(index, len(titles), s)
        return value

    data = step(lambda: _data_step(cfg, out / "data"))
    runs = {b: step(lambda b=b: _train_step(cfg, data, b, out / "runs" / b)) for b in cfg.backbones}
    onnx = {
        b: step(lambda b=b: _convert_step(runs[b], out / "models" / f"{b}.onnx", b)) for b in runs
    }
    with _ray(cfg.ray_logs):
        val_scores = step(lambda: _score_step(cfg, data.val_csv, out / "val_scores", models=onnx))
        spec, report = step(lambda: _tune_step(cfg, data, val_scores, out))
        manifest = step(lambda: _manifest_step(data, out / "manifest.csv"))
        scored = step(
            lambda: _score_step(cfg, manifest, out / "scores", ensemble=out / "ensemble.json")
        )
    evaluation = step(lambda: _evaluate_step(cfg, spec, scored))
    result = DemoResult(
        out=out,
        data=data,
        steps=steps,
        ensemble=out / "ensemble.json",
        report=report,
        scores=scored.out,
        summary=scored.out / "_summary.json",
        figures=_figures(spec, scored.summary, evaluation.summary),
        seconds=time.perf_counter() - started,
        load_at_start=load_at_start,
    )
    _write_record(result, cfg)
    return result


def _data_step(cfg: DemoConfig, folder: Path) -> tuple[DemoData, str]:
    if cfg.data is None:
        data = synthetic_data(folder, cfg.images, cfg.image_size, cfg.seed)
        return data, f"SYNTHETIC faces (drawn shapes, no real people): {data.describe()}"
    data = sampled_data(Path(cfg.data), folder, cfg.images, cfg.seed)
    return data, f"sample of {data.source}: {data.describe()}"


def _train_step(cfg: DemoConfig, data: DemoData, backbone: str, run_dir: Path):
    from models.train import TrainConfig, train

    result = train(
        TrainConfig(
            data=str(data.train_csv),
            out=str(run_dir),
            backbone=backbone,
            image_size=cfg.image_size,
            # From scratch: nothing to download, and the demo must run offline.
            weights="none",
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            head_units=HEAD_UNITS,
            # A few epochs leave little overfitting to prevent; augmentation would only slow
            # the early learning the demo relies on.
            augment=False,
            patience=max(cfg.epochs, 1),
            faces=cfg.faces,
            seed=cfg.seed,
            verbose=0,
        )
    )
    epochs = len(result.history.get("loss", []))
    auc = result.val_metrics.get("roc_auc", math.nan)
    return result.run_dir, (
        f"{epochs} epoch(s) from scratch at {cfg.image_size} px, best val AUC {auc:.3f}"
    )


def _convert_step(run_dir: Path, onnx_path: Path, name: str) -> tuple[Path, str]:
    from convert.converter import convert_model

    result = convert_model(run_dir, onnx_path, name=name)
    return result.path, (
        f"parity max |logit diff| {result.parity.max_abs_logit_diff:.1g} "
        f"on {result.parity.n_images} images"
    )


def _score_step(
    cfg: DemoConfig,
    manifest: Path,
    out: Path,
    *,
    models: dict[str, Path] | None = None,
    ensemble: Path | None = None,
):
    from scoring.run import score_manifest

    result = score_manifest(
        manifest,
        models=[str(p) for p in models.values()] if models else None,
        ensemble=ensemble,
        out=out,
        label_column="label",
        num_workers=cfg.num_workers,
        progress=False,
    )
    s = result.summary
    return result, (
        f"{s['rows']} rows ({_status_text(s)}) at {s['images_per_s'] or 0:.1f} img/s "
        f"on Ray -> {out}"
    )


def _tune_step(cfg: DemoConfig, data: DemoData, val_scores, out: Path):
    from ensemble.cli import write_command_report
    from ensemble.scores import read_scores
    from ensemble.thresholds import parse_objective
    from ensemble.tune import tune

    result = tune(
        read_scores(val_scores.parquet_files),
        objective=parse_objective(cfg.objective),
        positive=data.class_names[1],
        seed=cfg.seed,
        n_boot=cfg.n_boot,
    )
    spec = result.spec
    spec.save(out / "ensemble.json")
    val = spec.content["validation"]
    report = write_command_report(
        out / "report", result.data, result.p_ensemble, spec, val, "ensemble tune"
    )
    return (spec, report), (
        f"{spec.method} ensemble, threshold {spec.threshold:.4g} for {spec.objective}, "
        f"val AUC {val['ensemble']['roc_auc']:.3f} -> {out / 'ensemble.json'}"
    )


def _manifest_step(data: DemoData, manifest: Path) -> tuple[Path, str]:
    """The test images as a scoring manifest (``path,label``): paths relative to OUT when the
    images are inside it (the synthetic set), so the folder can be moved; else absolute."""
    base = manifest.parent.resolve()
    rows = []
    with open(data.test_csv, newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            path = (data.test_csv.parent / rec["path"]).resolve()
            shown = path.relative_to(base) if path.is_relative_to(base) else path
            rows.append((shown.as_posix(), rec["label"]))
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return manifest, f"{len(rows)} test images no model or threshold has seen -> {manifest}"


def _evaluate_step(cfg: DemoConfig, spec, scored):
    from ensemble.evaluation import evaluate
    from ensemble.scores import read_scores

    ev = evaluate(spec, read_scores(scored.parquet_files), n_boot=cfg.n_boot, seed=cfg.seed)
    m = ev.summary["ensemble"]["metrics"]
    return ev, (
        f"test: ensemble AUC {ev.summary['ensemble']['roc_auc']:.3f}, accuracy "
        f"{m['accuracy']:.3f}, FAR {m['far']:.3f}, FRR {m['frr']:.3f} at the tuned threshold"
    )


def _status_text(summary: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(summary.get("rows_by_status", {}).items()))


def _figures(spec, scoring_summary: dict, test: dict) -> dict[str, Any]:
    val = spec.content["validation"]
    return {
        "val_auc": {
            **{name: m["roc_auc"] for name, m in val["models"].items()},
            "ensemble": val["ensemble"]["roc_auc"],
        },
        "method": spec.method,
        "objective": spec.objective,
        "threshold": spec.threshold,
        "test_auc": {
            **{name: m["roc_auc"] for name, m in test["models"].items()},
            "ensemble": test["ensemble"]["roc_auc"],
        },
        "test_accuracy": test["ensemble"]["metrics"]["accuracy"],
        "test_target": test["target"],
        "rows": scoring_summary["rows"],
        "rows_by_status": scoring_summary["rows_by_status"],
        "rows_scored": scoring_summary["rows_scored"],
        "images_per_s": scoring_summary["images_per_s"],
    }


def _write_record(result: DemoResult, cfg: DemoConfig) -> None:
    from models.jsonable import jsonable

    record = {
        "synthetic": result.data.synthetic,
        "data": {
            "source": result.data.source,
            "counts": result.data.counts,
            "class_names": list(result.data.class_names),
        },
        "settings": {k: os.fspath(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "steps": [asdict(s) for s in result.steps],
        "seconds": round(result.seconds, 1),
        "figures": result.figures,
        "paths": {
            "report": os.fspath(result.report),
            "ensemble": os.fspath(result.ensemble),
            "scores": os.fspath(result.scores),
            "summary": os.fspath(result.summary),
        },
        "cpus": os.cpu_count(),
        "load_average": {"start": list(result.load_at_start), "end": list(_load_average())},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (result.out / "demo.json").write_text(
        json.dumps(jsonable(record), indent=2, allow_nan=False) + "\n"
    )


def _release_keras_graphs() -> None:
    """Drop the Keras models and traced graphs a finished step left behind: the driver holds
    the Ray job next, beside scorer actors, on machines where memory is short."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
        gc.collect()


def _load_average() -> tuple[float, ...]:
    return tuple(round(x, 2) for x in os.getloadavg()) if hasattr(os, "getloadavg") else ()


@contextmanager
def _ray(forward_logs: bool) -> Iterator[None]:
    """One local Ray for both scoring runs (score_manifest uses the Ray already running in the
    process); one the caller started is left running."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(
        include_dashboard=False,
        logging_level=logging.WARNING if forward_logs else logging.ERROR,
        log_to_driver=forward_logs,
    )
    try:
        yield
    finally:
        ray.shutdown()
