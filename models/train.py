"""Train a classifier: data -> tf.data -> transfer learning (or from scratch) -> RUN_DIR.

RUN_DIR holds ``model.keras`` (the best epoch by validation score), ``history.csv``,
``curves.png`` and ``run.json`` (everything needed to reproduce the run, and what later
stages read: backbone, classes, positive class, preprocessing, image size, SHA-256).
"""

from __future__ import annotations

import csv
import logging
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.data import (
    BAD_IMAGE_POLICIES,
    Augmentation,
    DecodedImages,
    decode_samples,
    discover_data,
    make_dataset,
)
from models.errors import DataError, UsageError
from models.framing import Framing, parse_face_mode
from models.internal.validation import (
    check_choice,
    check_fraction,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    parse_image_size,
    parse_units,
)
from models.jsonable import jsonable
from models.preprocessing import PREPROCESSING
from models.registry import BACKBONE_NAMES, HEADS, get_backbone
from models.runinfo import MODEL_FILENAME, RunInfo, sha256_file, write_run_info
from models.schedules import LR_SCHEDULES, CosineAnnealing
from models.versions import package_versions

log = logging.getLogger(__name__)

CLASS_WEIGHTS = ("none", "balanced")
MONITORS = ("val_auc", "val_loss", "val_accuracy")
#: Learning rates when --lr is not given: the head on a frozen base, and from scratch.
DEFAULT_LR_PRETRAINED = 1e-3
DEFAULT_LR_SCRATCH = 1e-3
#: Fine-tuning runs at this fraction of the head's learning rate unless --fine-tune-lr.
FINE_TUNE_LR_FACTOR = 0.1
#: BatchNormalization momentum from scratch: Keras' 0.99 leaves the moving statistics at
#: their initial values for hundreds of steps, so validation scores lag far behind training.
SCRATCH_BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``genderscore models train`` (the CLI builds one of these)."""

    data: str
    out: str
    backbone: str = "mobilenetv2"
    image_size: int | str | tuple[int, int] | None = None
    weights: str = "imagenet"
    epochs: int = 10
    fine_tune_epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    fine_tune_lr: float | None = None
    fine_tune_layers: int | None = None
    loss: str = "bce"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    class_weight: str = "none"
    oversample: bool = False
    augment: bool = True
    #: Adds JPEG, resolution, blur and colour degradations of photos to ``augment``.
    photo_augment: bool = False
    #: Beta parameter of mixup on training batches (0: off), see :func:`models.data.mix_pairs`.
    mixup: float = 0.0
    val_split: float = 0.2
    positive: str | None = None
    preprocessing: str | None = None
    head: str | None = None
    head_units: str | tuple[int, ...] | None = None
    dropout: float | None = None
    bn_momentum: float | None = None
    patience: int = 4
    monitor: str = "val_auc"
    #: ``plateau`` (halve on a stall) or ``cosine`` (anneal to 0 by the last epoch or the
    #: end of ``time_budget_s``): see :mod:`models.schedules`.
    lr_schedule: str = "plateau"
    time_budget_s: float | None = None
    bad_images: str = "fail"
    #: Face framing (off, align, require): recorded in run.json, so later stages frame alike.
    faces: str = "off"
    seed: int = 0
    workers: int | None = None
    overwrite: bool = False
    verbose: int = 2


@dataclass
class TrainResult:
    """What a run produced: paths, the recorded run info and the best validation score."""

    run_dir: Path
    model_path: Path
    run_info: RunInfo
    history: dict[str, list[float]]
    best_score: float | None
    val_metrics: dict[str, Any] = field(default_factory=dict)


def check_train_config(cfg: TrainConfig) -> TrainConfig:
    """Validate every option at once; returns the config with sizes/units parsed."""
    check_choice(cfg.backbone, "--backbone", BACKBONE_NAMES)
    check_positive_int(cfg.epochs, "--epochs")
    if cfg.fine_tune_epochs is not None:
        check_non_negative_int(cfg.fine_tune_epochs, "--fine-tune-epochs")
    if cfg.fine_tune_layers is not None:
        check_non_negative_int(cfg.fine_tune_layers, "--fine-tune-layers")
    check_positive_int(cfg.batch_size, "--batch-size")
    check_positive_int(cfg.patience, "--patience")
    if cfg.lr is not None:
        check_positive_float(cfg.lr, "--lr")
    if cfg.fine_tune_lr is not None:
        check_positive_float(cfg.fine_tune_lr, "--fine-tune-lr")
    check_choice(cfg.loss, "--loss", ("bce", "focal"))
    check_fraction(cfg.focal_alpha, "--focal-alpha")
    if cfg.focal_gamma < 0:
        raise UsageError(f"--focal-gamma must be >= 0, got {cfg.focal_gamma}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise UsageError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.label_smoothing and cfg.loss != "bce":
        raise UsageError("--label-smoothing works with --loss bce only")
    if cfg.time_budget_s is not None:
        check_positive_float(cfg.time_budget_s, "--time-budget")
    if cfg.photo_augment and not cfg.augment:
        raise UsageError("--photo-augment works with --augment only")
    if not cfg.mixup >= 0:
        raise UsageError(f"--mixup must be >= 0 (0 turns it off), got {cfg.mixup}")
    check_choice(cfg.class_weight, "--class-weight", CLASS_WEIGHTS)
    check_fraction(cfg.val_split, "--val-split")
    check_choice(cfg.monitor, "--monitor", MONITORS)
    check_choice(cfg.lr_schedule, "--lr-schedule", LR_SCHEDULES)
    check_choice(cfg.bad_images, "--bad-images", BAD_IMAGE_POLICIES)
    parse_face_mode(cfg.faces)
    if cfg.preprocessing is not None:
        check_choice(cfg.preprocessing, "--preprocess", PREPROCESSING)
    if cfg.head is not None:
        check_choice(cfg.head, "--head", tuple(HEADS))
    if cfg.dropout is not None:
        check_fraction(cfg.dropout, "--dropout", open_low=False)
    if cfg.bn_momentum is not None:
        check_fraction(cfg.bn_momentum, "--bn-momentum", open_low=False)
    if cfg.workers is not None:
        check_positive_int(cfg.workers, "--workers")
    return replace(
        cfg, image_size=parse_image_size(cfg.image_size), head_units=parse_units(cfg.head_units)
    )


def train(config: TrainConfig) -> TrainResult:
    """Run one training job and write RUN_DIR (see the module docstring)."""
    cfg = check_train_config(config)
    from models.build import resolve_weights

    weights = resolve_weights(cfg.weights)  # checks a weights path before any work
    run_dir = _prepare_run_dir(Path(cfg.out), cfg.overwrite)
    bb = get_backbone(cfg.backbone)
    size = cfg.image_size or (bb.default_size, bb.default_size)
    preprocessing = cfg.preprocessing or bb.preprocessing
    framing = Framing(parse_face_mode(cfg.faces))

    data = discover_data(cfg.data, val_split=cfg.val_split, positive=cfg.positive, seed=cfg.seed)
    train_imgs, val_imgs = _decode(cfg, data, size, framing)
    model_path = run_dir / MODEL_FILENAME
    fitter = _Fitter(cfg, bb, size, weights, preprocessing, train_imgs, val_imgs, model_path)
    t0 = time.perf_counter()
    fitter.run_phases()
    train_seconds = time.perf_counter() - t0
    val_metrics = _validate_best(model_path, val_imgs, cfg.batch_size, preprocessing, data)
    history, phases = fitter.history_, fitter.phases_
    monitored = history.get(cfg.monitor, [])
    best_score = (
        float(np.nanmin(monitored) if fitter.mode == "min" else np.nanmax(monitored))
        if monitored
        else None
    )
    _write_history(run_dir / "history.csv", history)
    from models.plots import plot_history

    plot_history(
        history, run_dir / "curves.png", phase_starts=[p["first_epoch"] - 1 for p in phases[1:]]
    )
    augmentation = augmentation_of(cfg)
    record = {
        "model_file": MODEL_FILENAME,
        "model_sha256": sha256_file(model_path),
        "backbone": bb.name,
        "class_names": list(data.class_names),
        "positive_class": data.positive_class,
        "output": f"P({data.positive_class}): sigmoid of the last Dense(1)",
        "preprocessing": preprocessing,
        "preprocessing_spec": _spec_dict(preprocessing),
        "image_size": list(size),
        "framing": framing.to_dict(),
        "input": "float32 (batch, height, width, 3) RGB 0..255 after preprocessing",
        "weights": cfg.weights if weights in (None, "imagenet") else str(weights),
        "head": _head_dict(fitter.model),
        "seed": cfg.seed,
        "args": jsonable(asdict(cfg)),
        # What --augment and --photo-augment stood for in this version.
        "augmentation": jsonable(asdict(augmentation)) if augmentation else None,
        "data": _data_record(data, train_imgs, val_imgs),
        "phases": phases,
        "monitor": cfg.monitor,
        "best_score": best_score,
        "epochs_run": len(history.get("loss", [])),
        "train_seconds": round(train_seconds, 2),
        "val_metrics": val_metrics,
        "versions": _versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_run_info(run_dir, record)
    from models.runinfo import read_run_info

    info = read_run_info(model_path)
    assert info is not None
    log.info(
        "best %s %.4f; model written to %s",
        cfg.monitor,
        best_score if best_score is not None else float("nan"),
        model_path,
    )
    return TrainResult(run_dir, model_path, info, history, best_score, val_metrics)


def augmentation_of(cfg: TrainConfig) -> Augmentation | None:
    """The training augmentation ``cfg`` asks for (None with ``augment`` off)."""
    if not cfg.augment:
        return None
    return Augmentation().with_photo_degradations() if cfg.photo_augment else Augmentation()


def fit_datasets(
    cfg: TrainConfig, train_imgs: DecodedImages, val_imgs: DecodedImages, preprocessing: str
) -> tuple[Any, Any]:
    """The training dataset (shuffled or oversampled, augmented, mixed, class-weighted as
    ``cfg`` says) and the validation dataset (the images as they are)."""
    balanced = cfg.class_weight == "balanced"
    train = make_dataset(
        train_imgs,
        batch_size=cfg.batch_size,
        preprocessing=preprocessing,
        augmentation=augmentation_of(cfg),
        mixup=cfg.mixup,
        class_weight=_class_weight(train_imgs.targets) if balanced else None,
        shuffle=True,
        oversample=cfg.oversample,
        seed=cfg.seed,
    )
    return train, make_dataset(val_imgs, batch_size=cfg.batch_size, preprocessing=preprocessing)


def _decode(
    cfg: TrainConfig, data: Any, size: tuple[int, int], framing: Framing
) -> tuple[Any, Any]:
    """The training and validation images, decoded (and framed) once, both classes checked."""
    t0 = time.perf_counter()
    decoded = [
        decode_samples(
            samples,
            size,
            data.positive_class,
            bad_images=cfg.bad_images,
            workers=cfg.workers,
            what=what,
            framing=framing,
        )
        for samples, what in ((data.train, "training data"), (data.val, "validation data"))
    ]
    train_imgs, val_imgs = decoded
    _check_both_classes(train_imgs, data.class_names, data.positive_class)
    log.info(
        "decoded %d training and %d validation images at %dx%d in %.1fs (%s)",
        len(train_imgs),
        len(val_imgs),
        size[0],
        size[1],
        time.perf_counter() - t0,
        data.layout,
    )
    return train_imgs, val_imgs


class _Fitter:
    """The model, its data and its callbacks, fitted in one phase (from scratch) or two (a
    frozen pretrained base, then its top layers); ``history_`` and ``phases_`` as they go."""

    def __init__(
        self,
        cfg: TrainConfig,
        bb: Any,
        size: tuple[int, int],
        weights: Any,
        preprocessing: str,
        train_imgs: Any,
        val_imgs: Any,
        model_path: Path,
    ) -> None:
        import keras

        from models.build import build_model
        from models.losses import make_loss

        self.cfg, self.bb = cfg, bb
        self.pretrained = weights is not None
        keras.utils.set_random_seed(cfg.seed)
        self.ds_train, self.ds_val = fit_datasets(cfg, train_imgs, val_imgs, preprocessing)
        if cfg.bn_momentum is not None:
            bn_momentum = cfg.bn_momentum
        else:
            bn_momentum = None if self.pretrained else SCRATCH_BN_MOMENTUM
        self.model = build_model(
            bb,
            size,
            weights=weights,
            head=cfg.head,
            head_units=cfg.head_units,
            dropout=cfg.dropout,
            bn_momentum=bn_momentum,
        )
        self.loss = make_loss(
            cfg.loss,
            alpha=cfg.focal_alpha,
            gamma=cfg.focal_gamma,
            label_smoothing=cfg.label_smoothing,
        )
        self.mode = "min" if cfg.monitor == "val_loss" else "max"
        self.checkpoint = keras.callbacks.ModelCheckpoint(
            str(model_path), monitor=cfg.monitor, mode=self.mode, save_best_only=True, verbose=0
        )
        self.history_: dict[str, list[float]] = {}
        self.phases_: list[dict[str, Any]] = []
        self.deadline_: float | None = None

    def run_phases(self) -> None:
        from models.build import unfreeze_top

        cfg, bb = self.cfg, self.bb
        if cfg.time_budget_s is not None:
            self.deadline_ = time.perf_counter() + cfg.time_budget_s
        lr = cfg.lr or (DEFAULT_LR_PRETRAINED if self.pretrained else DEFAULT_LR_SCRATCH)
        if not self.pretrained:
            self.fit(cfg.epochs, lr, "from scratch", warmup=True)
            return
        self.fit(cfg.epochs, lr, "head (frozen base)", warmup=False)
        n_layers = bb.fine_tune_layers if cfg.fine_tune_layers is None else cfg.fine_tune_layers
        ft_epochs = cfg.epochs if cfg.fine_tune_epochs is None else cfg.fine_tune_epochs
        if n_layers > 0 and ft_epochs > 0:
            unfrozen = unfreeze_top(self.model, n_layers)
            log.info("fine-tuning the top %d layers (%d with weights)", n_layers, unfrozen)
            ft_lr = cfg.fine_tune_lr or lr * FINE_TUNE_LR_FACTOR
            self.fit(ft_epochs, ft_lr, f"fine-tune top {n_layers} layers", warmup=False)

    def fit(self, epochs: int, rate: float, name: str, warmup: bool) -> None:
        import keras

        cfg, model, history = self.cfg, self.model, self.history_
        model.compile(
            optimizer=keras.optimizers.Adam(rate),
            loss=self.loss,
            metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
            # XLA compilation of a whole backbone costs more than it saves on CPU.
            jit_compile=False,
        )
        # Creating the optimizer's slots inside the first traced step makes TensorFlow
        # trace the step twice: build them up front.
        model.optimizer.build(model.trainable_variables)
        start = len(history.get("loss", []))
        result = model.fit(
            self.ds_train,
            validation_data=self.ds_val,
            epochs=start + epochs,
            initial_epoch=start,
            callbacks=self._callbacks(rate, warmup, epochs),
            shuffle=False,  # tf.data already shuffles (or oversamples) each epoch
            verbose=cfg.verbose,
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        history.setdefault("phase", []).extend([len(self.phases_)] * len(result.history["loss"]))
        self.phases_.append(
            {
                "name": name,
                "epochs_run": len(result.history["loss"]),
                "learning_rate": rate,
                "final_learning_rate": float(model.optimizer.learning_rate.numpy()),
                "trainable_params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
                "first_epoch": start + 1,
            }
        )

    def _callbacks(self, rate: float, warmup: bool, epochs: int) -> list[Any]:
        import keras

        cfg, mode = self.cfg, self.mode
        callbacks = [
            self.checkpoint,
            keras.callbacks.EarlyStopping(
                monitor=cfg.monitor, mode=mode, patience=cfg.patience, restore_best_weights=True
            ),
        ]
        if cfg.lr_schedule == "cosine":
            # Its own warm-up: a separate one would set the rate after the cosine's.
            callbacks.append(CosineAnnealing(rate, epochs, self.deadline_, warmup))
            warmup = False
        else:
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor=cfg.monitor,
                    mode=mode,
                    factor=0.5 if not self.pretrained else 0.2,
                    patience=max(1, cfg.patience // 2),
                    min_lr=rate / 100,
                )
            )
        if warmup:
            callbacks.append(_LinearWarmup(rate))
        if self.deadline_ is not None:
            callbacks.append(_TimeBudget(self.deadline_))
        return callbacks


def _validate_best(
    model_path: Path, val_imgs: Any, batch_size: int, preprocessing: str, data: Any
) -> dict[str, Any]:
    """The best checkpoint's metrics on the validation images at 0.5."""
    from models.build import load_model
    from models.metrics import binary_metrics

    best = load_model(model_path)
    val_scores = best.predict(
        make_dataset(val_imgs, batch_size=batch_size, preprocessing=preprocessing), verbose=0
    ).reshape(-1)
    return binary_metrics(
        val_imgs.targets,
        val_scores,
        0.5,
        class_names=_target_names(data.class_names, data.positive_class),
    )


def _data_record(data: Any, train_imgs: Any, val_imgs: Any) -> dict[str, Any]:
    """``data`` in run.json: where the images came from, how many, which were skipped."""
    return {
        **data.describe(),
        "train_images": len(train_imgs),
        "val_images": len(val_imgs),
        "skipped_images": [
            {"path": b.path, "code": b.code, "message": b.message}
            for b in train_imgs.bad + val_imgs.bad
        ],
    }


def _target_names(class_names: tuple[str, str], positive: str) -> tuple[str, str]:
    """Names in target order: (negative, positive)."""
    negative = next(c for c in class_names if c != positive)
    return negative, positive


def _check_both_classes(images: DecodedImages, class_names: tuple[str, str], positive: str) -> None:
    counts = np.bincount(images.targets, minlength=2)
    names = _target_names(class_names, positive)
    if counts.min() == 0:
        missing = names[int(np.argmin(counts))]
        raise DataError(f"no readable training images of class {missing!r} left")


def _class_weight(targets: np.ndarray) -> dict[int, float]:
    from sklearn.utils.class_weight import compute_class_weight

    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=targets)
    return {0: float(weights[0]), 1: float(weights[1])}


def _prepare_run_dir(run_dir: Path, overwrite: bool) -> Path:
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file: give a folder for the run")
    if (run_dir / MODEL_FILENAME).exists() and not overwrite:
        raise UsageError(
            f"--out {run_dir} already holds a trained model: choose another folder"
            " or pass --overwrite"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    keys = ["epoch", *sorted(k for k in history if k != "phase"), "phase"]
    n = len(history.get("loss", []))
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(keys)
        for i in range(n):
            writer.writerow([i + 1, *(history[k][i] for k in keys[1:])])


def _head_dict(model: Any) -> list[dict[str, Any]]:
    import keras

    out = []
    for layer in model.layers[1:]:
        if isinstance(layer, keras.Model):
            out.append({"layer": "base", "name": layer.name})
        elif isinstance(layer, keras.layers.Dense):
            out.append(
                {"layer": "Dense", "units": layer.units, "activation": layer.activation.__name__}
            )
        elif isinstance(layer, keras.layers.Dropout):
            out.append({"layer": "Dropout", "rate": layer.rate})
        else:
            out.append({"layer": type(layer).__name__})
    return out


def _spec_dict(name: str) -> dict[str, Any]:
    from models.preprocessing import get_preprocessing

    return get_preprocessing(name).as_dict()


def _versions() -> dict[str, str]:
    packages = ("genderscore", "tensorflow", "keras", "numpy")
    return {**package_versions(packages), "python": platform.python_version()}


class _LinearWarmup:
    """Raise the learning rate linearly over the first epoch: random initial weights give
    large early gradients, and a short warm-up keeps Adam from overshooting."""

    def __new__(cls, target_lr: float) -> Any:
        import keras

        class Warmup(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.steps: int | None = None
                self.done = False

            def on_train_begin(self, logs: Any = None) -> None:
                self.steps = self.params.get("steps") or None

            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                if self.done:
                    return
                steps = self.steps or 1
                frac = min(1.0, (batch + 1) / steps)
                self.model.optimizer.learning_rate.assign(target_lr * max(frac, 0.1))

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                if not self.done:
                    self.model.optimizer.learning_rate.assign(target_lr)
                    self.done = True

        return Warmup()


class _TimeBudget:
    """Stop training after the epoch that leaves too little time for another one of the same
    length before ``deadline`` (a ``time.perf_counter`` value): on a shared machine epochs
    vary, and a fixed epoch count would overrun or waste the budget."""

    def __new__(cls, deadline: float) -> Any:
        import keras

        class TimeBudget(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.epoch_start = 0.0

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.epoch_start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                now = time.perf_counter()
                if now + (now - self.epoch_start) > deadline:
                    log.info("time budget reached after epoch %d: stopping", epoch + 1)
                    self.model.stop_training = True

        return TimeBudget()
