"""Reference results on real faces: train the three backbones from random weights, convert,
score, tune the ensemble, evaluate on validation and on a cross-domain test, write the table.

    python benchmarks/reference_results.py --data ../shared/data --work /work/ref [STAGE ...]

Stages (default: all, in order; each skips what its outputs already hold, so a stopped run is
resumed by running the same command again; ``--redo`` recomputes the named stages):

- ``prepare``: manifests under WORK/manifests: ``train.csv`` (utkface/train + facecom/train
  minus a stratified, seeded ``--holdout`` share, split ``train``; utkface/val, split ``val``),
  ``val.csv`` (utkface/val), ``crossdomain.csv`` (the held-out FACECOM images) and
  ``calibration.csv`` (``--calibration-count`` training images for INT8 calibration);
- ``train``: ``models.train.train`` per backbone into WORK/runs/<backbone>/ (weights none);
- ``convert``: ONNX fp32 WORK/onnx/<backbone>.onnx, and ``--int8`` with auto format and the
  INT8 gate: WORK/onnx/<backbone>_int8.onnx when the gate keeps int8 (the decision is recorded);
- ``score``: ``scoring.run.score_manifest`` of val.csv and crossdomain.csv with the fp32 models
  into WORK/scores/;
- ``tune``: ``ensemble.tune`` on the fp32 validation scores for each ``--objective``;
- ``evaluate``: AUC, accuracy, macro F1, per-class accuracy, FAR and FRR at each tuned
  threshold for every model and the ensemble, on val and on the cross-domain test;
  INT8 against fp32 (AUC, label agreement, img/s) -> WORK/results.json;
- ``table``: WORK/results.md, the Markdown tables docs/benchmarks.md's "Reference results" shows.

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

log = logging.getLogger("reference_results")

STAGES = ("prepare", "train", "convert", "score", "tune", "evaluate", "table")
BACKBONES = ("mobilenetv2", "efficientnetb0", "resnet50")
CLASSES = ("female", "male")


@dataclass
class Recipe:
    """Every setting of a reference run (recorded in WORK/recipe.json)."""

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
    train_limit: int | None = None
    holdout: float = 0.3
    calibration_count: int = 300
    calibration_limit: int = 300
    check_limit: int = 256
    objectives: tuple[str, ...] = ("far=0.05", "eer")
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

    def ensemble(self, objective: str) -> Path:
        return self.work / "ensemble" / f"{_slug(objective)}.json"


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
    """Write the four manifests (deterministic for a given data folder and seed)."""
    utk_train = _read_split(r.data, "utkface", "train")
    utk_val = _read_split(r.data, "utkface", "val")
    facecom = _read_split(r.data, "facecom", "train")
    held_out, facecom_train = _stratified_pick(facecom, r.holdout, r.seed)
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
    _write_csv(m / "val.csv", utk_val, ("path", "label"))
    _write_csv(m / "crossdomain.csv", held_out, ("path", "label"))
    _write_csv(m / "calibration.csv", calibration, ("path", "label"))
    counts = {
        "train": _counts(train_rows),
        "train_from_facecom": _counts([x for x in train_rows if "/facecom/" in x[0]]),
        "val": _counts(utk_val),
        "crossdomain": _counts(held_out),
        "calibration": _counts(calibration),
    }
    (m / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    log.info("manifests in %s: %s", m, counts)


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
            time_budget_s=r.budget_s(backbone),
            seed=r.seed,
            overwrite=True,
            verbose=r.verbose,
        )
        started = time.perf_counter()
        log.info("train %s at %d px, up to %d epochs", backbone, r.size(backbone), cfg.epochs)
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
    """Score val.csv and crossdomain.csv with the fp32 models on Ray (score_manifest resumes
    a stopped run and does nothing for a committed one). INT8 is compared in ``evaluate``
    on pre-decoded images (benchmarks/bench_int8.py), where the speed is the models' own."""
    from scoring.run import score_manifest

    for split in SPLITS:
        out = r.scores(split, "fp32")
        score_manifest(
            r.manifests / f"{split}.csv",
            models=[str(r.onnx(b)) for b in r.backbones],
            out=out,
            label_column="label",
            force=redo,
        )
        log.info("score %s: %s", split, out)


# ---------------------------------------------------------------------------- tune


def stage_tune(r: Recipe, redo: bool = False) -> None:
    """``ensemble.tune`` on the fp32 validation scores, one ensemble file (+ report) per
    objective."""
    from ensemble.scores import read_scores
    from ensemble.thresholds import parse_objective
    from ensemble.tune import tune

    scores = read_scores(r.scores("val", "fp32"))
    for objective in r.objectives:
        path = r.ensemble(objective)
        if path.exists() and not redo:
            continue
        result = tune(scores, objective=parse_objective(objective), seed=r.seed, n_boot=r.n_boot)
        path.parent.mkdir(parents=True, exist_ok=True)
        result.spec.save(path)
        log.info(
            "tune %s: %s, threshold %.4f -> %s",
            objective,
            result.spec.method,
            result.spec.threshold,
            path,
        )


# ---------------------------------------------------------------------------- evaluate

SPLITS = {"val": "utkface/val", "crossdomain": "FACECOM held out"}


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


def stage_evaluate(r: Recipe) -> None:
    """Every model and the ensemble on val and on the cross-domain test, at the threshold each
    objective chose on val (a member gets its own threshold for the objective, the ensemble
    its tuned one); INT8 against fp32; training and conversion facts -> WORK/results.json."""
    from ensemble.evaluation import evaluate
    from ensemble.scores import labeled_scores, read_scores
    from ensemble.thresholds import parse_objective, select_threshold
    from models.metrics import binary_metrics
    from scoring.ensemble_spec import EnsembleSpec

    scores = {split: read_scores(r.scores(split, "fp32")) for split in SPLITS}
    results: dict[str, Any] = {"objectives": {}, "splits": SPLITS}
    for objective in r.objectives:
        spec = EnsembleSpec.load(r.ensemble(objective))
        names = [m.name for m in spec.models]
        data = {s: labeled_scores(sc, spec.positive_class, names) for s, sc in scores.items()}
        classes = data["val"].ordered_classes
        table: dict[str, dict[str, Any]] = {}
        for j, name in enumerate(names):
            val = data["val"]
            thr = select_threshold(val.y, val.X[:, j], parse_objective(objective)).threshold
            table[name] = {
                s: _row(binary_metrics(d.y, d.X[:, j], thr, classes), classes)
                for s, d in data.items()
            }
        ens = {s: evaluate(spec, sc, n_boot=r.n_boot, seed=r.seed) for s, sc in scores.items()}
        table["ensemble"] = {
            s: {
                **_row(e.summary["ensemble"]["metrics"], classes),
                "ci": e.summary["ensemble"]["ci"],
            }
            for s, e in ens.items()
        }
        results["objectives"][objective] = {
            "ensemble_file": str(r.ensemble(objective)),
            "method": spec.method,
            "selection": spec.content.get("selection", {}).get("results"),
            "target_crossdomain": ens["crossdomain"].summary["target"],
            "rows": table,
        }
    results["training"] = _training_facts(r)
    int8_path = r.work / "onnx" / "int8.json"
    results["int8_decisions"] = json.loads(int8_path.read_text()) if int8_path.exists() else {}
    if r.int8 and any(_int8_models(r).values()):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_int8 import compare_int8, print_comparison

        results["int8"] = compare_int8(
            r.work / "onnx", r.manifests / "val.csv", ensemble=r.ensemble(r.objectives[0])
        )
        print_comparison(results["int8"])
    results["recipe"] = _recipe_dict(r)
    (r.work / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    log.info("results -> %s", r.work / "results.json")


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


def render_markdown(results: dict[str, Any]) -> str:
    """The Markdown docs/benchmarks.md's "Reference results" section shows."""
    lines: list[str] = []
    for objective, res in results["objectives"].items():
        first = next(iter(res["rows"].values()))["val"]
        acc_keys = [k for k in first if k.startswith("acc_")]
        lines += [
            f"Threshold chosen on utkface/val for `{objective}` (members: each its own;"
            f" ensemble: `{res['method']}`):",
            "",
            "| model | data | AUC | accuracy | macro F1 | "
            + " | ".join(f"acc {k[4:]}" for k in acc_keys)
            + " | FAR | FRR |",
            "| --- | --- | ---: | ---: | ---: | "
            + " | ".join("---:" for _ in acc_keys)
            + " | ---: | ---: |",
        ]
        for name, by_split in res["rows"].items():
            for split, row in by_split.items():
                label = f"**{name}**" if name == "ensemble" else name
                cells = [row["auc"], row["accuracy"], row["macro_f1"], *(row[k] for k in acc_keys)]
                lines.append(
                    f"| {label} | {results['splits'][split]} | "
                    + " | ".join(f"{v:.3f}" for v in cells)
                    + f" | {row['far']:.3f} | {row['frr']:.3f} |"
                )
        lines.append("")
    lines += [
        "| backbone | input | epochs run (best) | training time | train images | best val AUC |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, t in results["training"].items():
        lines.append(
            f"| {name} | {t['image_size'][0]} px | {t['epochs_run']} ({t['best_epoch']})"
            f" | {t['train_seconds'] / 60:.0f} min | {t['train_images']} | {t['best_val_auc']:.3f} |"
        )
    lines.append("")
    int8 = results.get("int8")
    if int8:
        lines += [
            f"INT8 against fp32 on utkface/val ({int8['n']} images, ONNX Runtime alone on"
            f" pre-decoded images, batch {int8['batch']}):",
            "",
            "| model | AUC fp32 | AUC int8 | drop | label agreement | img/s fp32 | img/s int8 | ratio |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        entries = list(int8["models"].items())
        if int8.get("ensemble"):
            entries.append(("**ensemble**", int8["ensemble"]))
        for name, row in entries:
            if "auc_int8" not in row:
                decision = results.get("int8_decisions", {}).get(name, {})
                lines.append(
                    f"| {name} | {row['auc_fp32']:.4f} | fp32 kept"
                    f" ({_why_fp32(decision)}) | | | {row['img_s_fp32']:.0f} | | |"
                )
                continue
            lines.append(
                f"| {name} | {row['auc_fp32']:.4f} | {row['auc_int8']:.4f} | {row['auc_drop']:+.4f}"
                f" | {row['agreement']:.4f} | {row['img_s_fp32']:.0f} | {row['img_s_int8']:.0f}"
                f" | {row['speedup']:.2f}x |"
            )
        lines.append("")
    return "\n".join(lines)


def _why_fp32(decision: dict[str, Any]) -> str:
    if "refused_by_gate" in decision:
        return "int8 refused by the gate"
    speeds = decision.get("speed_img_per_s")
    if speeds:
        best = max(v for k, v in speeds.items() if k != "fp32")
        return f"int8 {best / speeds['fp32']:.2f}x fp32 at batch 8: below 1.15x"
    return "no int8 decision recorded"


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
        "stages", nargs="*", metavar="STAGE", help=" / ".join(STAGES) + " (default: all)"
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
    p.add_argument("--train-limit", type=int, default=None, help="stratified training subset")
    p.add_argument("--holdout", type=float, default=0.3, help="FACECOM share held out")
    p.add_argument("--calibration-count", type=int, default=300)
    p.add_argument("--objectives", nargs="+", default=["far=0.05", "eer"])
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
        train_limit=a.train_limit,
        holdout=a.holdout,
        calibration_count=a.calibration_count,
        calibration_limit=a.calibration_count,
        objectives=tuple(a.objectives),
        int8=not a.no_int8,
        n_boot=a.n_boot,
        seed=a.seed,
        verbose=a.verbose,
    )
    return recipe, list(a.stages) or list(STAGES), a.redo


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
