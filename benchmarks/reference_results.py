"""Reference results on real faces: train the three backbones from random weights on aligned
faces, convert, score, tune the ensemble on each domain, evaluate, write the tables.

    python benchmarks/reference_results.py --data ../shared/data --work /work/ref [STAGE ...]

Stages (default: all, in order; each skips what its outputs already hold, so a stopped run is
resumed by running the same command again; ``--redo`` recomputes the named stages):

- ``prepare``: manifests under WORK/manifests: ``train.csv`` (utkface/train + facecom/train
  minus a stratified, seeded ``--holdout`` share, split ``train``; utkface/val, split ``val``),
  ``val.csv`` (utkface/val, with ``age`` and ``race`` when utkface/val.csv has them), the
  held-out FACECOM photos split in stratified, seeded halves ``facecom_tune.csv`` and
  ``facecom_test.csv``, and ``calibration.csv`` (``--calibration-count`` training images for
  INT8 calibration); with ``--faces align``, how many FACECOM photos had no face found;
- ``train``: ``models.train.train`` per backbone into WORK/runs/<backbone>/ (weights none,
  framing ``--faces``, schedule ``--lr-schedule``);
- ``convert``: ONNX fp32 WORK/onnx/<backbone>.onnx, and ``--int8`` with auto format and the
  INT8 gate: WORK/onnx/<backbone>_int8.onnx when the gate keeps int8 (the decision is recorded);
- ``score``: ``scoring.run.score_manifest`` of the three evaluation manifests with the fp32
  models (framed as each model was trained) into WORK/scores/;
- ``tune``: ``ensemble.tune`` for each ``--objective`` on UTKFace val and on the FACECOM tune
  half: WORK/ensemble/<domain>_<objective>.json;
- ``evaluate``: AUC, accuracy, macro F1, per-class accuracy, FAR and FRR with bootstrap CIs
  at each tuned threshold for every model and the ensemble, on UTKFace val and on the FACECOM
  test half; the targets; the CI width against the size of the tune set; FAR and FRR per race
  and age band on UTKFace val; INT8 against fp32 (AUC, label agreement, img/s) ->
  WORK/results.json;
- ``table``: WORK/results.md, the Markdown tables docs/benchmarks.md's "Reference results" shows;
- ``ablation`` (only when named): each training lever (cosine schedule, batch 128, photo
  augmentation, mixup) against the base at the same budget on one backbone, and at equal
  epochs (a shared machine fits more or fewer epochs into a budget), two seeds of the base for
  the noise -> WORK/ablation.json and WORK/ablation.md.

Everything, the ablation included: name every stage, ``... prepare train convert score tune
evaluate table ablation``.

The data folder must hold ``utkface/{train,val}/{female,male}/`` and
``facecom/train/{female,male}/`` (the layout of ``../shared/data``). Never commit WORK.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_tables, bench_int8

from reference_tables import render_ablation, render_markdown  # noqa: E402

log = logging.getLogger("reference_results")

STAGES = ("prepare", "train", "convert", "score", "tune", "evaluate", "table", "ablation")
#: What runs without stage names: the recipe (``ablation`` is asked for by name).
RECIPE_STAGES = STAGES[:-1]
BACKBONES = ("mobilenetv2", "efficientnetb0", "resnet50")
CLASSES = ("female", "male")
#: The scored manifests and how the tables name them.
SPLITS = {
    "val": "UTKFace val",
    "facecom_tune": "FACECOM tune half",
    "facecom_test": "FACECOM test half",
}
#: Where thresholds are tuned: domain -> the split tuned on.
TUNE_ON = {"utkface": "val", "facecom": "facecom_tune"}
#: UTKFace's subgroup columns (utkface/val.csv) and the age bands of the audit.
GROUP_COLUMNS = ("race", "age")
AGE_BANDS = (0.0, 18.0, 40.0, 60.0, 200.0)
#: Tune-set sizes (FACECOM rows) whose threshold and CI width the evaluate stage measures,
#: and the seeded draws per size.
TUNE_SIZES = (50, 100, 150, 200)
TUNE_DRAWS = 20
#: The ablation's variants: key -> (what the table says, TrainConfig settings over the base:
#: the recipe's framing and size, a plateau schedule, batch 32, no photo augmentation, no
#: mixup). ``base`` and ``seed1`` differ by the seed alone: their gap is the noise.
ABLATION = {
    "base": ("plateau, batch 32", {}),
    "seed1": ("plateau, batch 32, seed 1", {"seed": 1}),
    "cosine": ("cosine", {"lr_schedule": "cosine"}),
    "batch128": ("batch 128, lr 2e-3", {"batch_size": 128, "lr": 2e-3}),
    "photo": ("photo augmentation", {"photo_augment": True}),
    "mixup": ("mixup 0.2", {"mixup": 0.2}),
}


@dataclass
class Recipe:
    """Every setting of a reference run (recorded under ``recipe`` in WORK/results.json)."""

    data: Path
    work: Path
    backbones: tuple[str, ...] = BACKBONES
    sizes: dict[str, int] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    budgets_min: dict[str, float] = field(default_factory=dict)
    default_size: int = 96
    default_epochs: int = 30
    batch_size: int = 32
    lr: float | None = None
    patience: int = 4
    label_smoothing: float = 0.0
    augment: bool = True
    photo_augment: bool = False
    mixup: float = 0.0
    lr_schedule: str = "plateau"
    faces: str = "align"
    train_limit: int | None = None
    holdout: float = 0.3
    tune_share: float = 0.5
    min_group: int = 30
    calibration_count: int = 300
    calibration_limit: int = 300
    check_limit: int = 256
    objectives: tuple[str, ...] = ("far=0.05", "eer")
    ablation_backbone: str = "mobilenetv2"
    ablation_variants: tuple[str, ...] = tuple(ABLATION)
    ablation_budget_min: float = 5.0
    ablation_limit: int | None = 8000
    int8: bool = True
    n_boot: int = 1000
    seed: int = 0
    verbose: int = 2

    def size(self, backbone: str) -> int:
        return self.sizes.get(backbone, self.default_size)

    def n_epochs(self, backbone: str) -> int:
        return self.epochs.get(backbone, self.default_epochs)

    def budget_s(self, backbone: str) -> float | None:
        minutes = self.budgets_min.get(backbone)
        return None if minutes is None else 60.0 * minutes

    # ------------------------------------------------------------------ paths
    @property
    def manifests(self) -> Path:
        return self.work / "manifests"

    def run_dir(self, backbone: str) -> Path:
        return self.work / "runs" / backbone

    def onnx(self, backbone: str, int8: bool = False) -> Path:
        return self.work / "onnx" / f"{backbone}{'_int8' if int8 else ''}.onnx"

    def scores(self, split: str, precision: str) -> Path:
        return self.work / "scores" / f"{split}_{precision}"

    def ensemble(self, objective: str, domain: str = "utkface") -> Path:
        """The ensemble tuned for ``objective`` on ``domain`` (see :data:`TUNE_ON`)."""
        return self.work / "ensemble" / f"{domain}_{_slug(objective)}.json"


def _slug(objective: str) -> str:
    return objective.replace("=", "").replace(".", "")


# ---------------------------------------------------------------------------- prepare


def _read_split(data: Path, dataset: str, split: str) -> list[tuple[str, str]]:
    """(absolute path, label) of every image in DATA/<dataset>/<split>/<class>/, sorted."""
    from models.data import scan_class_folders

    root = data / dataset / split
    if not root.is_dir():
        from models.errors import UsageError

        raise UsageError(f"--data {data}: no {dataset}/{split}/ folder (see the docstring)")
    return sorted((str(Path(s.path).resolve()), s.label) for s in scan_class_folders(root))


def _stratified_pick(
    rows: list[tuple[str, str]], share: float | int, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split rows into (picked, rest): ``share`` of each class (a fraction, or a total count
    spread over the classes by their shares), seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picked: list[tuple[str, str]] = []
    rest: list[tuple[str, str]] = []
    for label in sorted({lab for _, lab in rows}):
        group = [r for r in rows if r[1] == label]
        order = rng.permutation(len(group))
        if isinstance(share, float):
            n = round(share * len(group))
        else:
            n = round(share * len(group) / len(rows))
        picked += [group[i] for i in sorted(order[:n])]
        rest += [group[i] for i in sorted(order[n:])]
    return picked, rest


def _write_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)


def stage_prepare(r: Recipe) -> None:
    """Write the manifests (deterministic for a given data folder and seed)."""
    utk_train = _read_split(r.data, "utkface", "train")
    utk_val = _read_split(r.data, "utkface", "val")
    facecom = _read_split(r.data, "facecom", "train")
    held_out, facecom_train = _stratified_pick(facecom, r.holdout, r.seed)
    facecom_tune, facecom_test = _stratified_pick(held_out, r.tune_share, r.seed + 3)
    train_rows = utk_train + facecom_train
    if r.train_limit is not None and r.train_limit < len(train_rows):
        train_rows, _ = _stratified_pick(train_rows, int(r.train_limit), r.seed + 1)
    calibration, _ = _stratified_pick(
        train_rows, min(r.calibration_count, len(train_rows)), r.seed + 2
    )
    m = r.manifests
    _write_csv(
        m / "train.csv",
        [(p, lab, "train") for p, lab in train_rows] + [(p, lab, "val") for p, lab in utk_val],
        ("path", "label", "split"),
    )
    groups = _utkface_groups(r.data / "utkface" / "val.csv")
    if groups:
        val_rows = [(p, lab, *groups.get(p, ("", ""))) for p, lab in utk_val]
        _write_csv(m / "val.csv", val_rows, ("path", "label", *GROUP_COLUMNS))
    else:
        _write_csv(m / "val.csv", utk_val, ("path", "label"))
    _write_csv(m / "facecom_tune.csv", facecom_tune, ("path", "label"))
    _write_csv(m / "facecom_test.csv", facecom_test, ("path", "label"))
    _write_csv(m / "calibration.csv", calibration, ("path", "label"))
    counts: dict[str, Any] = {
        "train": _counts(train_rows),
        "train_from_facecom": _counts([x for x in train_rows if "/facecom/" in x[0]]),
        "val": _counts(utk_val),
        "val_with_groups": sum(p in groups for p, _ in utk_val),
        "facecom_tune": _counts(facecom_tune),
        "facecom_test": _counts(facecom_test),
        "calibration": _counts(calibration),
    }
    if r.faces != "off":
        counts["facecom_no_face"] = _photos_without_face(facecom)
    (m / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    log.info("manifests in %s: %s", m, counts)


def _utkface_groups(csv_path: Path) -> dict[str, tuple[str, str]]:
    """Absolute image path -> (race, age) from UTKFace's CSV (empty without one)."""
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not set(GROUP_COLUMNS) <= set(rows[0]):
        return {}
    return {
        str((csv_path.parent / row["path"]).resolve()): tuple(row[c] for c in GROUP_COLUMNS)
        for row in rows
    }


def _photos_without_face(rows: list[tuple[str, str]]) -> dict[str, Any]:
    """Run the face detector over the FACECOM photos (the ones trained on and the held-out
    ones): how many had no face, which framing ``align`` then scores whole."""
    from models.framing import FaceMode, Framing
    from models.imageio import decode_framed, read_image_bytes

    framing = Framing(FaceMode.ALIGN)
    missing: list[str] = []
    for path, _ in rows:
        framed = decode_framed(read_image_bytes(path), [((64, 64), framing)])
        if not framed.faces:
            missing.append(Path(path).name)
    return {"photos": len(rows), "no_face": len(missing), "files": missing[:50]}


def _counts(rows: Sequence[tuple[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, label in rows:
        out[label] = out.get(label, 0) + 1
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------- train


def stage_train(r: Recipe, redo: bool = False) -> None:
    """Train each backbone from random weights; a finished run (run.json) is kept."""
    from models.train import TrainConfig, train

    for backbone in r.backbones:
        run_dir = r.run_dir(backbone)
        if (run_dir / "run.json").exists() and not redo:
            log.info("train %s: done already (%s)", backbone, run_dir)
            continue
        cfg = TrainConfig(
            data=str(r.manifests / "train.csv"),
            out=str(run_dir),
            backbone=backbone,
            image_size=r.size(backbone),
            weights="none",
            epochs=r.n_epochs(backbone),
            batch_size=r.batch_size,
            lr=r.lr,
            patience=r.patience,
            monitor="val_auc",
            label_smoothing=r.label_smoothing,
            augment=r.augment,
            photo_augment=r.photo_augment,
            mixup=r.mixup,
            lr_schedule=r.lr_schedule,
            faces=r.faces,
            time_budget_s=r.budget_s(backbone),
            seed=r.seed,
            overwrite=True,
            verbose=r.verbose,
        )
        started = time.perf_counter()
        log.info(
            "train %s at %d px, up to %d epochs, faces %s",
            backbone,
            r.size(backbone),
            cfg.epochs,
            r.faces,
        )
        result = train(cfg)
        log.info(
            "train %s: best val_auc %.4f in %.0f s -> %s",
            backbone,
            result.best_score or float("nan"),
            time.perf_counter() - started,
            result.model_path,
        )


# ---------------------------------------------------------------------------- convert


def stage_convert(r: Recipe, redo: bool = False) -> None:
    """fp32 ONNX per backbone, then INT8 as ``convert --int8 --int8-format auto`` decides
    (speed gain, then the gate on validation images); decisions in WORK/onnx/int8.json."""
    from convert.converter import convert_model
    from convert.errors import Int8GateError

    decisions_path = r.work / "onnx" / "int8.json"
    decisions = json.loads(decisions_path.read_text()) if decisions_path.exists() else {}
    for backbone in r.backbones:
        fp32 = r.onnx(backbone)
        common = dict(
            name=backbone,
            check_data=r.manifests / "val.csv",
            check_limit=r.check_limit,
        )
        if redo or not fp32.exists():
            res = convert_model(r.run_dir(backbone), fp32, **common)
            log.info("convert %s: %s (%.0f s)", backbone, fp32, res.seconds)
        if not r.int8 or (backbone in decisions and not redo):
            continue
        int8 = r.onnx(backbone, int8=True)
        try:
            res = convert_model(
                r.run_dir(backbone),
                int8,
                **common,
                int8=True,
                calibration=r.manifests / "calibration.csv",
                calibration_limit=r.calibration_limit,
            )
            decision = dict(res.int8 or {})
            if decision.get("chosen", "fp32") == "fp32":
                int8.unlink()  # convert wrote fp32 (int8 does not pay): no int8 file
        except Int8GateError as exc:
            decision = {"chosen": "fp32", "refused_by_gate": str(exc)}
            int8.unlink(missing_ok=True)
        decision["int8_file"] = str(int8) if int8.exists() else None
        # Re-read: another convert run (other backbones) may have written meanwhile.
        decisions = json.loads(decisions_path.read_text()) if decisions_path.exists() else {}
        decisions[backbone] = decision
        decisions_path.write_text(json.dumps(decisions, indent=2) + "\n")
        log.info("int8 %s: %s", backbone, decision)


# ---------------------------------------------------------------------------- score


def _int8_models(r: Recipe) -> dict[str, bool]:
    return {b: r.onnx(b, int8=True).exists() for b in r.backbones}


def stage_score(r: Recipe, redo: bool = False) -> None:
    """Score the evaluation manifests with the fp32 models, each framed as it was trained
    (score_manifest resumes a stopped run and does nothing for a committed one). INT8 is
    compared in ``evaluate`` on pre-decoded images (benchmarks/bench_int8.py), where the
    speed is the models' own."""
    from scoring.run import score_manifest

    for split in SPLITS:
        manifest = r.manifests / f"{split}.csv"
        with open(manifest, newline="") as fh:
            header = next(csv.reader(fh))
        out = r.scores(split, "fp32")
        score_manifest(
            manifest,
            models=[str(r.onnx(b)) for b in r.backbones],
            out=out,
            label_column="label",
            keep_columns=[c for c in GROUP_COLUMNS if c in header],
            force=redo,
        )
        log.info("score %s: %s", split, out)


# ---------------------------------------------------------------------------- tune


def stage_tune(r: Recipe, redo: bool = False) -> None:
    """``ensemble.tune`` for each objective on each domain's tune split (:data:`TUNE_ON`):
    one ensemble file per (domain, objective)."""
    from ensemble.scores import read_scores
    from ensemble.thresholds import parse_objective
    from ensemble.tune import tune

    for domain, split in TUNE_ON.items():
        scores = read_scores(r.scores(split, "fp32"))
        for objective in r.objectives:
            path = r.ensemble(objective, domain)
            if path.exists() and not redo:
                continue
            result = tune(
                scores, objective=parse_objective(objective), seed=r.seed, n_boot=r.n_boot
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            result.spec.save(path)
            log.info(
                "tune %s on %s: %s, threshold %.4f -> %s",
                objective,
                SPLITS[split],
                result.spec.method,
                result.spec.threshold,
                path,
            )


# ---------------------------------------------------------------------------- evaluate


def _row(metrics: dict[str, Any], classes: tuple[str, str]) -> dict[str, Any]:
    """The table's figures out of ``models.metrics.binary_metrics``."""
    return {
        "n": metrics["n"],
        "auc": metrics["roc_auc"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        **{f"acc_{c}": metrics["per_class"][c]["accuracy"] for c in classes},
        "far": metrics["far"],
        "frr": metrics["frr"],
        "threshold": metrics["threshold"],
    }


#: Where each domain's thresholds are evaluated: its own tune split's domain and the test half.
EVALUATE_ON = {"utkface": ("val", "facecom_test"), "facecom": ("facecom_test",)}


def stage_evaluate(r: Recipe) -> None:
    """Every model and the ensemble at the thresholds tuned on each domain, on UTKFace val and
    the FACECOM test half, with bootstrap CIs; the targets; CI width against tune-set size;
    subgroups on UTKFace val; INT8 against fp32; training facts -> WORK/results.json."""
    from ensemble.evaluation import evaluate, member_thresholds, spec_scores
    from ensemble.scores import read_scores
    from models.metrics import binary_metrics
    from scoring.ensemble_spec import EnsembleSpec

    scores = {split: read_scores(r.scores(split, "fp32")) for split in SPLITS}
    results: dict[str, Any] = {"objectives": {}, "splits": SPLITS, "tune_on": TUNE_ON}
    for objective in r.objectives:
        by_domain: dict[str, Any] = {}
        for domain, splits in EVALUATE_ON.items():
            spec = EnsembleSpec.load(r.ensemble(objective, domain))
            thresholds = member_thresholds(spec)
            table: dict[str, dict[str, Any]] = {}
            evaluations = {
                s: evaluate(spec, scores[s], n_boot=r.n_boot, seed=r.seed) for s in splits
            }
            for split, ev in evaluations.items():
                data = spec_scores(spec, scores[split])
                classes = data.ordered_classes
                for j, m in enumerate(data.models):
                    metrics = binary_metrics(data.y, data.X[:, j], thresholds[m["name"]], classes)
                    table.setdefault(m["name"], {})[split] = _row(metrics, classes)
                ens = ev.summary["ensemble"]
                table.setdefault("ensemble", {})[split] = {
                    **_row(ens["metrics"], classes),
                    "ci": ens["ci"],
                }
            by_domain[domain] = {
                "ensemble_file": str(r.ensemble(objective, domain)),
                "method": spec.method,
                "target": {s: ev.summary["target"] for s, ev in evaluations.items()},
                "rows": table,
            }
        results["objectives"][objective] = by_domain
    results["targets"] = _targets(results, r.objectives)
    results["tune_size"] = _tune_size_curve(r, scores)
    results["subgroups"] = _subgroups(r, scores["val"])
    results["training"] = _training_facts(r)
    counts_path = r.manifests / "counts.json"
    results["counts"] = json.loads(counts_path.read_text()) if counts_path.exists() else {}
    int8_path = r.work / "onnx" / "int8.json"
    results["int8_decisions"] = json.loads(int8_path.read_text()) if int8_path.exists() else {}
    if r.int8 and any(_int8_models(r).values()):
        from bench_int8 import compare_int8, print_comparison

        results["int8"] = compare_int8(
            r.work / "onnx", r.manifests / "val.csv", ensemble=r.ensemble(r.objectives[0])
        )
        print_comparison(results["int8"])
    results["recipe"] = _recipe_dict(r)
    (r.work / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    log.info("results -> %s", r.work / "results.json")


def _targets(results: dict[str, Any], objectives: Sequence[str]) -> dict[str, Any]:
    """The issue's aims, each with the measured figure and whether it held."""
    out: dict[str, Any] = {}
    any_objective = results["objectives"][objectives[0]]
    utk_rows = any_objective["utkface"]["rows"]
    ens_auc = {s: utk_rows["ensemble"][s]["auc"] for s in ("val", "facecom_test")}
    best_member = {
        s: max(row[s]["auc"] for name, row in utk_rows.items() if name != "ensemble")
        for s in ens_auc
    }
    out["ensemble_auc_facecom_test"] = {
        "value": ens_auc["facecom_test"],
        "aim": 0.95,
        "met": ens_auc["facecom_test"] >= 0.95,
    }
    out["ensemble_auc_val"] = {"value": ens_auc["val"], "aim": 0.97, "met": ens_auc["val"] >= 0.97}
    out["ensemble_above_members"] = {
        s: {
            "ensemble": ens_auc[s],
            "best_member": best_member[s],
            "met": ens_auc[s] > best_member[s],
        }
        for s in ens_auc
    }
    if "eer" in results["objectives"]:
        f1 = results["objectives"]["eer"]["facecom"]["rows"]["ensemble"]["facecom_test"]
        out["macro_f1_eer_facecom_test"] = {
            "value": f1["macro_f1"],
            "ci": f1["ci"]["macro_f1"],
            "aim": 0.90,
            "met": f1["macro_f1"] >= 0.90,
        }
    for objective in objectives:
        if not objective.startswith(("far=", "frr=")):
            continue
        rate, _, target = objective.partition("=")
        row = results["objectives"][objective]["facecom"]["rows"]["ensemble"]["facecom_test"]
        ci = row["ci"][rate]
        out[f"{rate}_target_facecom_test"] = {
            "objective": objective,
            "value": row[rate],
            "ci": ci,
            # The aim: the rate measured on the test half is consistent with the target.
            "met": ci["low"] <= float(target) <= ci["high"] or ci["high"] <= float(target),
        }
    return out


def _tune_size_curve(r: Recipe, scores: dict[str, Any]) -> dict[str, Any] | None:
    """How many labeled target-domain images a threshold needs: for each tune-set size, seeded
    stratified draws from the FACECOM tune half; per draw the threshold for the first far/frr
    objective, the bootstrap CI width of that rate on the draw, and the rate it gives on the
    test half."""
    import numpy as np

    from ensemble.bootstrap import bootstrap_ci
    from ensemble.evaluation import spec_scores
    from ensemble.thresholds import parse_objective, select_threshold
    from models.probabilities import is_positive
    from scoring.ensemble_spec import EnsembleSpec

    objective = next((o for o in r.objectives if o.startswith(("far=", "frr="))), None)
    if objective is None:
        return None
    rate = objective.partition("=")[0]
    spec = EnsembleSpec.load(r.ensemble(objective, "facecom"))
    tune = spec_scores(spec, scores["facecom_tune"])
    test = spec_scores(spec, scores["facecom_test"])
    p_tune, p_test = spec.combine(tune.raw), spec.combine(test.raw)
    rng = np.random.default_rng(r.seed)
    sizes = [n for n in TUNE_SIZES if n < len(tune.y)] + [len(tune.y)]
    rows = []
    for n in sizes:
        draws = 1 if n == len(tune.y) else TUNE_DRAWS
        widths, on_test = [], []
        for _ in range(draws):
            idx = _stratified_indices(tune.y, n, rng)
            y, p = tune.y[idx], p_tune[idx]
            thr = select_threshold(y, p, parse_objective(objective)).threshold
            ci = bootstrap_ci(y, p, thr, n_boot=min(r.n_boot, 500), seed=r.seed)[rate]
            widths.append(ci["high"] - ci["low"])
            # FAR: negatives accepted as positive; FRR: positives rejected.
            wrong = is_positive(p_test, thr) if rate == "far" else ~is_positive(p_test, thr)
            on_test.append(float(wrong[test.y == (0 if rate == "far" else 1)].mean()))
        rows.append(
            {
                "n": n,
                "n_negative": int(round(n * (1 - tune.y.mean()))),
                "draws": draws,
                "ci_width_median": float(np.median(widths)),
                "test_rate_mean": float(np.mean(on_test)),
                "test_rate_p10": float(np.percentile(on_test, 10)),
                "test_rate_p90": float(np.percentile(on_test, 90)),
            }
        )
    return {"objective": objective, "rate": rate, "test_n": int(len(test.y)), "rows": rows}


def _stratified_indices(y: Any, n: int, rng: Any) -> Any:
    """``n`` row indices drawn without replacement, each class in its share of ``y``."""
    import numpy as np

    picked = []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        k = min(len(idx), max(1, round(n * len(idx) / len(y))))
        picked.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(picked))


def _subgroups(r: Recipe, val_scores: Any) -> dict[str, Any] | None:
    """FAR and FRR per race and age band on UTKFace val, at each objective's threshold tuned
    there (``ensemble evaluate --group-by race --group-by age --bands age=...``)."""
    from ensemble.evaluation import evaluate
    from ensemble.groups import AuditOptions
    from scoring.ensemble_spec import EnsembleSpec

    columns = [c for c in GROUP_COLUMNS if c in val_scores.table.column_names]
    if not columns:
        return None
    options = AuditOptions(group_by=tuple(columns), bands={"age": AGE_BANDS}, min_group=r.min_group)
    out = {}
    for objective in r.objectives:
        spec = EnsembleSpec.load(r.ensemble(objective, "utkface"))
        ev = evaluate(spec, val_scores, n_boot=r.n_boot, seed=r.seed, groups=options)
        out[objective] = ev.summary["groups"]
    return out


def _training_facts(r: Recipe) -> dict[str, Any]:
    facts = {}
    for backbone in r.backbones:
        info = json.loads((r.run_dir(backbone) / "run.json").read_text())
        facts[backbone] = {
            "image_size": info["image_size"],
            "epochs_run": info["epochs_run"],
            "max_epochs": info["args"]["epochs"],
            "best_epoch": _best_epoch(r.run_dir(backbone) / "history.csv", info["monitor"]),
            "best_val_auc": info["best_score"],
            "train_seconds": info["train_seconds"],
            "train_images": info["data"]["train_images"],
            "label_smoothing": info["args"].get("label_smoothing", 0.0),
            "augment": info["args"]["augment"],
            "photo_augment": info["args"].get("photo_augment", False),
            "mixup": info["args"].get("mixup", 0.0),
            "batch_size": info["args"]["batch_size"],
            "lr_schedule": info["args"].get("lr_schedule", "plateau"),
            "faces": info["framing"]["mode"] if "framing" in info else "off",
            "time_budget_s": info["args"].get("time_budget_s"),
        }
    return facts


def _best_epoch(history: Path, monitor: str) -> int | None:
    with open(history) as fh:
        rows = list(csv.DictReader(fh))
    if not rows or monitor not in rows[0]:
        return None
    values = [float(row[monitor]) for row in rows]
    best = min(values) if monitor == "val_loss" else max(values)
    return values.index(best) + 1


def _recipe_dict(r: Recipe) -> dict[str, Any]:
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in r.__dict__.items()
        if k not in ("verbose",)
    }


# ---------------------------------------------------------------------------- table


def stage_table(r: Recipe) -> None:
    """WORK/results.md: one table per objective, training settings, INT8 figures."""
    results = json.loads((r.work / "results.json").read_text())
    text = render_markdown(results)
    (r.work / "results.md").write_text(text)
    print(text)


# ---------------------------------------------------------------------------- ablation


def stage_ablation(r: Recipe, redo: bool = False) -> None:
    """Each training lever against its reference at the same budget (one backbone, a seeded
    subset of the training rows), the seed's own noise beside it -> WORK/ablation.json and
    WORK/ablation.md. A lever earns its place in the recipe by a gain above the noise."""
    from models.evaluate import evaluate
    from models.train import TrainConfig, train

    data = _ablation_manifest(r)
    path = r.work / "ablation.json"
    done = json.loads(path.read_text()) if path.exists() and not redo else {}
    for key in r.ablation_variants:
        label, settings = ABLATION[key]
        run_dir = r.work / "ablation" / key
        if key in done:
            if "val_auc_by_epoch" not in done[key] and (run_dir / "history.csv").exists():
                done[key]["val_auc_by_epoch"] = _val_auc_by_epoch(run_dir)  # older records
            continue
        cfg = TrainConfig(
            data=str(data),
            out=str(run_dir),
            backbone=r.ablation_backbone,
            image_size=r.size(r.ablation_backbone),
            weights="none",
            epochs=r.n_epochs(r.ablation_backbone),
            patience=r.patience,
            monitor="val_auc",
            augment=r.augment,
            faces=r.faces,
            time_budget_s=60.0 * r.ablation_budget_min,
            overwrite=True,
            verbose=r.verbose,
            **{"seed": r.seed, **settings},
        )
        log.info("ablation %s (%s): %.0f min", key, label, r.ablation_budget_min)
        result = train(cfg)
        facecom = evaluate(result.model_path, r.manifests / "facecom_tune.csv")
        info = json.loads((run_dir / "run.json").read_text())
        done[key] = {
            "label": label,
            "settings": settings,
            "val_auc": result.val_metrics["roc_auc"],
            "facecom_tune_auc": facecom.metrics["roc_auc"],
            "epochs_run": info["epochs_run"],
            "train_seconds": info["train_seconds"],
            "val_auc_by_epoch": _val_auc_by_epoch(run_dir),
        }
        path.write_text(json.dumps(done, indent=2) + "\n")
    done = {k: done[k] for k in ABLATION if k in done}
    text = render_ablation(done, r.ablation_budget_min, r.ablation_backbone)
    (r.work / "ablation.md").write_text(text)
    print(text)


def _val_auc_by_epoch(run_dir: Path) -> list[float]:
    """Validation AUC after each epoch (RUN_DIR/history.csv): the levers compared at equal
    epochs, apart from how many epochs the machine fitted into the budget."""
    with open(run_dir / "history.csv", newline="") as fh:
        return [float(row["val_auc"]) for row in csv.DictReader(fh)]


def _ablation_manifest(r: Recipe) -> Path:
    """train.csv's training rows cut to ``ablation_limit`` (stratified, seeded), all its
    validation rows: WORK/manifests/ablation_train.csv."""
    out = r.manifests / "ablation_train.csv"
    with open(r.manifests / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train_rows = [(row["path"], row["label"]) for row in rows if row["split"] == "train"]
    if r.ablation_limit is not None and r.ablation_limit < len(train_rows):
        train_rows, _ = _stratified_pick(train_rows, int(r.ablation_limit), r.seed + 4)
    val_rows = [(row["path"], row["label"], "val") for row in rows if row["split"] == "val"]
    _write_csv(
        out, [(p, lab, "train") for p, lab in train_rows] + val_rows, ("path", "label", "split")
    )
    return out


# ---------------------------------------------------------------------------- command line


def _per_backbone(values: Sequence[str], kind: type, what: str) -> tuple[Any, dict[str, Any]]:
    """``["96", "resnet50=64"]`` -> (96, {"resnet50": 64}): a bare value is the default."""
    default = None
    per: dict[str, Any] = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        try:
            parsed = kind(number)
        except ValueError:
            raise SystemExit(f"{what} {value!r}: expected NUMBER or BACKBONE=NUMBER") from None
        if not sep:
            default = parsed
        elif name in BACKBONES:
            per[name] = parsed
        else:
            raise SystemExit(f"{what} {value!r}: unknown backbone {name!r}")
    return default, per


def parse_args(argv: Sequence[str] | None = None) -> tuple[Recipe, list[str], bool]:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "stages",
        nargs="*",
        metavar="STAGE",
        help=" / ".join(STAGES) + " (default: all but ablation)",
    )
    p.add_argument("--data", type=Path, required=True, help="folder with utkface/ and facecom/")
    p.add_argument("--work", type=Path, required=True, help="output folder (outside the repo)")
    p.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    p.add_argument("--size", action="append", default=[], help="px, or BACKBONE=px (repeat)")
    p.add_argument("--epochs", action="append", default=[], help="N, or BACKBONE=N (repeat)")
    p.add_argument(
        "--budget", action="append", default=[], help="training minutes, or BACKBONE=minutes"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--photo-augment", action="store_true", help="JPEG, blur, colour degradations")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    p.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="plateau")
    p.add_argument("--faces", choices=("off", "align"), default="align", help="framing")
    p.add_argument("--train-limit", type=int, default=None, help="stratified training subset")
    p.add_argument("--holdout", type=float, default=0.3, help="FACECOM share held out")
    p.add_argument(
        "--tune-share", type=float, default=0.5, help="share of the held-out FACECOM to tune on"
    )
    p.add_argument("--calibration-count", type=int, default=300)
    p.add_argument("--objectives", nargs="+", default=["far=0.05", "eer"])
    p.add_argument("--min-group", type=int, default=30, help="subgroup audit: smallest group")
    p.add_argument("--ablation-backbone", choices=BACKBONES, default="mobilenetv2")
    p.add_argument("--ablation-variants", nargs="+", choices=list(ABLATION), default=list(ABLATION))
    p.add_argument("--ablation-budget", type=float, default=5.0, help="minutes per variant")
    p.add_argument(
        "--ablation-limit", type=int, default=8000, help="training rows of the ablation (0: all)"
    )
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    p.add_argument("--redo", action="store_true", help="recompute the named stages")
    a = p.parse_args(argv)
    unknown = [s for s in a.stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {unknown}: choose from {', '.join(STAGES)}")
    size, sizes = _per_backbone(a.size, int, "--size")
    epochs, per_epochs = _per_backbone(a.epochs, int, "--epochs")
    budget, budgets = _per_backbone(a.budget, float, "--budget")
    if budget is not None:
        budgets = {b: budgets.get(b, budget) for b in BACKBONES}
    recipe = Recipe(
        data=a.data.resolve(),
        work=a.work.resolve(),
        backbones=tuple(a.backbones),
        sizes=sizes,
        epochs=per_epochs,
        budgets_min=budgets,
        default_size=size or 96,
        default_epochs=epochs or 30,
        batch_size=a.batch_size,
        lr=a.lr,
        patience=a.patience,
        label_smoothing=a.label_smoothing,
        augment=not a.no_augment,
        photo_augment=a.photo_augment,
        mixup=a.mixup,
        lr_schedule=a.lr_schedule,
        faces=a.faces,
        train_limit=a.train_limit,
        holdout=a.holdout,
        tune_share=a.tune_share,
        min_group=a.min_group,
        ablation_backbone=a.ablation_backbone,
        ablation_variants=tuple(a.ablation_variants),
        ablation_budget_min=a.ablation_budget,
        ablation_limit=a.ablation_limit or None,
        calibration_count=a.calibration_count,
        calibration_limit=a.calibration_count,
        objectives=tuple(a.objectives),
        int8=not a.no_int8,
        n_boot=a.n_boot,
        seed=a.seed,
        verbose=a.verbose,
    )
    return recipe, list(a.stages) or list(RECIPE_STAGES), a.redo


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    recipe, stages, redo = parse_args(argv)
    recipe.work.mkdir(parents=True, exist_ok=True)
    runners = {
        "prepare": lambda: stage_prepare(recipe),
        "train": lambda: stage_train(recipe, redo),
        "convert": lambda: stage_convert(recipe, redo),
        "score": lambda: stage_score(recipe, redo),
        "tune": lambda: stage_tune(recipe, redo),
        "evaluate": lambda: stage_evaluate(recipe),
        "table": lambda: stage_table(recipe),
        "ablation": lambda: stage_ablation(recipe, redo),
    }
    for stage in STAGES:
        if stage in stages:
            started = time.perf_counter()
            runners[stage]()
            _record_time(recipe, stage, time.perf_counter() - started)
    return 0


def _record_time(r: Recipe, stage: str, seconds: float) -> None:
    path = r.work / "stage_times.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times[stage] = round(seconds, 1)
    path.write_text(json.dumps(times, indent=2) + "\n")
    log.info("stage %s: %.1f s", stage, seconds)


if __name__ == "__main__":
    sys.exit(main())
