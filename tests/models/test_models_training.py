"""Each backbone built small, trained, reloaded, evaluated and predicted; RUN_DIR contents."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.build import build_model, load_model, logit_model
from models.errors import DataError, UsageError
from models.evaluate import evaluate
from models.imageio import load_image
from models.predict import predict
from models.preprocessing import preprocess
from models.registry import BACKBONE_NAMES, get_backbone
from models.runinfo import read_run_info, sha256_file

SIZE = 32  # as tests/models/conftest.py trains them


def _manual_probs(model, paths, mode):
    """The model's P(output class) computed by hand: the shared loader, then the formula."""
    x = preprocess(np.stack([load_image(p, SIZE) for p in paths]), mode)
    logits = np.asarray(logit_model(model)(x, training=False)).reshape(-1)
    return logits, 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


@pytest.mark.slow  # trains a model (the shared `trained` fixture)
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_run_dir_records_what_later_stages_need(backbone, trained):
    run = trained(backbone)
    assert {"model.keras", "history.csv", "curves.png", "run.json"} <= {
        p.name for p in run.iterdir()
    }
    rec = json.loads((run / "run.json").read_text())
    bb = get_backbone(backbone)
    assert rec["backbone"] == backbone and rec["preprocessing"] == bb.preprocessing
    assert rec["class_names"] == ["female", "male"] and rec["positive_class"] == "male"
    assert rec["image_size"] == [SIZE, SIZE] and rec["model_sha256"] == sha256_file(
        run / "model.keras"
    )
    assert rec["args"]["backbone"] == backbone and "seed" in rec and rec["versions"]["keras"]
    assert rec["val_metrics"]["n"] == rec["data"]["val_images"] > 0
    info = read_run_info(run / "model.keras")
    assert info.preprocessing == bb.preprocessing and info.image_size == (SIZE, SIZE)
    with open(run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == rec["epochs_run"] and {"loss", "val_loss", "val_auc"} <= set(rows[0])

    model = load_model(run / "model.keras", compile=True)  # custom focal loss reloads too
    assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 1)
    assert model.layers[1].name.startswith(bb.keras_name_prefix)
    dense = [layer.units for layer in model.layers if type(layer).__name__ == "Dense"]
    assert dense == ([128, 64, 1] if backbone == "resnet50" else [128, 1])


@pytest.mark.slow  # trains a model (the shared `trained` fixture)
def test_layouts_and_options_reach_the_run(trained):
    mobile = json.loads((trained("mobilenetv2") / "run.json").read_text())
    assert mobile["data"]["layout"] == "csv" and mobile["args"]["loss"] == "focal"
    assert mobile["args"]["oversample"] and mobile["args"]["class_weight"] == "balanced"
    assert mobile["data"]["val_counts"] == {"female": 6, "male": 6}
    resnet = json.loads((trained("resnet50") / "run.json").read_text())
    assert resnet["data"]["layout"] == "train/val folders"
    assert [p["name"] for p in resnet["phases"]] == ["from scratch"]


@pytest.mark.slow  # trains a model (the shared `trained` fixture)
def test_pretrained_weights_train_in_two_phases(trained, base_weights_file):
    run = trained("efficientnetb0")
    rec = json.loads((run / "run.json").read_text())
    assert rec["data"]["layout"] == "class folders + split"
    assert rec["weights"] == str(base_weights_file)
    head, tune = rec["phases"]
    assert head["name"] == "head (frozen base)" and tune["name"].startswith("fine-tune top 12")
    assert head["trainable_params"] < tune["trainable_params"]
    assert tune["learning_rate"] == pytest.approx(head["learning_rate"] / 10)
    assert rec["epochs_run"] == 2
    # The base started from the file: its first convolution (never unfrozen) is unchanged.
    model = load_model(run / "model.keras")
    base = get_backbone("efficientnetb0").constructor()(
        include_top=False, weights=str(base_weights_file), input_shape=(SIZE, SIZE, 3)
    )
    np.testing.assert_array_equal(
        model.layers[1].get_layer("stem_conv").get_weights()[0],
        base.get_layer("stem_conv").get_weights()[0],
    )


@pytest.mark.slow  # trains a model (the shared `trained` fixture)
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_evaluate_and_predict_see_what_training_saw(backbone, trained, synthetic_dir, tmp_path):
    run = trained(backbone)
    model = load_model(run / "model.keras")
    mode = get_backbone(backbone).preprocessing
    result = evaluate(run / "model.keras", synthetic_dir / "val", out=tmp_path, batch_size=20)
    m = result.metrics
    assert m["n"] == 48 and m["class_names"] == ["female", "male"]
    assert set(m["per_class"]) == {"female", "male"} and 0 <= m["accuracy"] <= 1
    for key in ("macro_f1", "weighted_f1", "weighted_precision", "roc_auc"):
        assert key in m
    for name in (
        "metrics.json",
        "predictions.csv",
        "misclassified.csv",
        "confusion_matrix.png",
        "roc.png",
    ):
        assert (tmp_path / name).is_file(), name
    logits, _ = _manual_probs(model, result.paths, mode)
    # Same pipeline: equal up to float32 differences between graph and eager execution,
    # compared as logits where float32 probabilities still resolve them.
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(result.scores, probs, rtol=0, atol=1e-4)
    clear = np.minimum(result.scores, 1 - result.scores) > 1e-3
    s = result.scores[clear]
    np.testing.assert_allclose(np.log(s / (1 - s)), logits[clear], rtol=0, atol=5e-4)
    if backbone != "efficientnetb0":  # BatchNorm statistics from data: outputs vary
        assert np.ptp(logits) > 0.05
        wrong, _ = _manual_probs(model, result.paths, "rescale")
        assert np.abs(wrong - logits).max() > 0.05  # a wrong preprocessing would show

    paths = result.paths[:3]
    rows, info = predict(run / "model.keras", paths, show=tmp_path / "show.png")
    assert info.positive_class == "male" and (tmp_path / "show.png").stat().st_size > 0
    for row, p in zip(rows, result.scores[:3], strict=True):
        assert row.p_positive == pytest.approx(p, rel=1e-5, abs=1e-6)
        assert row.label == ("male" if p >= 0.5 else "female")
        assert row.confidence == pytest.approx(max(p, 1 - p), rel=1e-5, abs=1e-6)


@pytest.mark.slow  # trains a model (the shared `trained` fixture)
def test_misclassified_copies_and_csv(trained, synthetic_dir, tmp_path):
    run = trained("mobilenetv2")
    result = evaluate(
        run / "model.keras", synthetic_dir, out=tmp_path, threshold=0.0, copy_misclassified=True
    )
    # At threshold 0 every image is called male: exactly the 24 female images are wrong.
    assert len(result.misclassified) == 24
    copies = sorted((tmp_path / "misclassified" / "female_as_male").iterdir())
    assert len(copies) == 24 and copies[0].read_bytes() == Path(result.paths[0]).read_bytes()
    with open(tmp_path / "misclassified.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24 and {r["true_label"] for r in rows} == {"female"}
    assert json.loads((tmp_path / "metrics.json").read_text())["per_class"]["female"]["recall"] == 0


@pytest.mark.slow  # trains a model (the shared `trained` fixture)
def test_a_model_without_run_json_needs_its_preprocessing(trained, synthetic_dir, tmp_path):
    src = trained("mobilenetv2") / "model.keras"
    copy = tmp_path / "copied.keras"
    shutil.copy(src, copy)
    with pytest.raises(UsageError, match="records no preprocessing.*mobilenet_v2, resnet50"):
        evaluate(copy, synthetic_dir / "val")
    one = [str(synthetic_dir / "val" / "male" / "male_00000.jpg")]
    with pytest.raises(UsageError, match="records no class names"):
        predict(copy, one, preprocessing="mobilenet_v2")
    ours = evaluate(src, synthetic_dir / "val")
    # Given explicitly (and asking for P(female)), the copy scores exactly as recorded.
    flipped = evaluate(copy, synthetic_dir / "val", preprocessing="mobilenet_v2", positive="female")
    np.testing.assert_allclose(flipped.scores, 1 - ours.scores, atol=1e-6)
    assert flipped.metrics["class_names"] == ["male", "female"]
    assert flipped.metrics["accuracy"] == pytest.approx(ours.metrics["accuracy"])
    # A model file changed after training is refused, not trusted.
    (src.parent / "run.json").write_text(
        (src.parent / "run.json").read_text().replace(sha256_file(src), "0" * 64)
    )
    try:
        with pytest.raises(DataError, match="changed after training"):
            predict(src, one)
    finally:
        (src.parent / "run.json").write_text(
            (src.parent / "run.json").read_text().replace("0" * 64, sha256_file(src))
        )


@pytest.mark.slow  # trains a model (the shared `trained` fixture)
def test_predict_reports_unreadable_images_as_rows(trained, tmp_path, synthetic_dir):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"<html>not an image</html>")
    good = str(synthetic_dir / "val" / "female" / "female_00003.jpg")
    rows, _ = predict(
        trained("mobilenetv2") / "model.keras", [good, str(bad), str(tmp_path / "missing.jpg")]
    )
    assert rows[0].label in ("female", "male") and rows[0].error_code is None
    assert (rows[1].error_code, rows[2].error_code) == ("unsupported", "not_found")
    assert rows[1].label is None and rows[1].p_positive is None


def test_train_refuses_bad_input_before_building_anything(synthetic_dir, tmp_path):
    from models.train import TrainConfig, train

    def cfg(**kw):
        base = dict(
            data=str(synthetic_dir), out=str(tmp_path / "run"), weights="none", image_size=SIZE
        )
        return TrainConfig(**{**base, **kw})

    with pytest.raises(DataError, match="data not found"):
        train(cfg(data=str(tmp_path / "missing")))
    with pytest.raises(DataError, match="--positive 'woman' is not a class"):
        train(cfg(positive="woman"))
    with pytest.raises(UsageError, match="--focal-alpha must be in"):
        train(cfg(loss="focal", focal_alpha=1.5))
    with pytest.raises(UsageError, match="--lr-schedule must be one of"):
        train(cfg(lr_schedule="linear"))
    with pytest.raises(UsageError, match="neither 'imagenet', 'none' nor an existing weights file"):
        train(cfg(weights=str(tmp_path / "nope.h5")))
    with pytest.raises(UsageError, match="too small"):
        build_model("mobilenetv2", 16, weights=None)
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir / "train", data)
    (data / "female" / "truncated.jpg").write_bytes(
        (data / "female" / "female_00000.jpg").read_bytes()[:200]
    )
    with pytest.raises(
        DataError,
        match=r"unreadable image\(s\) in training data: .*truncated\.jpg \(decode_error\)",
    ):
        train(cfg(data=str(data)))
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "model.keras").write_bytes(b"earlier run")
    with pytest.raises(UsageError, match="already holds a trained model"):
        train(cfg())


@pytest.mark.slow  # trains a model
def test_time_budget_stops_after_the_first_epoch_and_smoothing_is_recorded(synthetic_dir, tmp_path):
    from models.train import TrainConfig, train

    base = dict(data=str(synthetic_dir), out=str(tmp_path / "run"), weights="none")
    result = train(
        TrainConfig(
            **base,
            backbone="mobilenetv2",
            image_size=SIZE,
            epochs=3,
            batch_size=16,
            augment=False,
            label_smoothing=0.1,
            # Shorter than any epoch: the budget must end the run after one epoch of three.
            time_budget_s=1e-3,
            verbose=0,
        )
    )
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["epochs_run"] == 1
    assert record["args"]["label_smoothing"] == 0.1
    assert record["args"]["time_budget_s"] == 1e-3
    with pytest.raises(UsageError, match="--label-smoothing works with --loss bce only"):
        train(TrainConfig(**base, loss="focal", label_smoothing=0.1))
    with pytest.raises(UsageError, match=r"--label-smoothing must be in \[0, 1\)"):
        train(TrainConfig(**base, label_smoothing=1.0))
    with pytest.raises(UsageError, match="--time-budget"):
        train(TrainConfig(**base, time_budget_s=0))


@pytest.mark.slow  # trains a model
def test_cosine_schedule_anneals_the_rate_to_near_zero_by_the_last_epoch(synthetic_dir, tmp_path):
    from models.train import TrainConfig, train

    result = train(
        TrainConfig(
            data=str(synthetic_dir),
            out=str(tmp_path / "run"),
            weights="none",
            backbone="mobilenetv2",
            image_size=SIZE,
            epochs=2,
            batch_size=16,
            lr=0.002,
            lr_schedule="cosine",
            patience=5,
            verbose=0,
        )
    )
    record = json.loads((result.run_dir / "run.json").read_text())
    (phase,) = record["phases"]
    assert record["args"]["lr_schedule"] == "cosine" and phase["epochs_run"] == 2
    # the last step's rate: cosine_rate at (steps - 1) / steps of the way, a few % of the base
    assert 0 < phase["final_learning_rate"] < 0.1 * phase["learning_rate"]


def test_photo_augment_and_mixup_are_checked_and_leave_validation_alone(synthetic_dir, tmp_path):
    from models.data import decode_samples, discover_data
    from models.train import TrainConfig, check_train_config, fit_datasets

    base = dict(data=str(synthetic_dir), out=str(tmp_path / "run"), image_size=SIZE)
    with pytest.raises(UsageError, match=r"--mixup must be >= 0 \(0 turns it off\), got -0.1"):
        check_train_config(TrainConfig(**base, mixup=-0.1))
    with pytest.raises(UsageError, match="--photo-augment works with --augment only"):
        check_train_config(TrainConfig(**base, augment=False, photo_augment=True))
    cfg = check_train_config(
        TrainConfig(**base, photo_augment=True, mixup=0.2, class_weight="balanced", batch_size=16)
    )
    data = discover_data(synthetic_dir)
    train_imgs, val_imgs = (
        decode_samples(samples, SIZE, data.positive_class) for samples in (data.train, data.val)
    )
    ds_train, ds_val = fit_datasets(cfg, train_imgs, val_imgs, "mobilenet_v2")
    ys = np.concatenate([y for _, y, _ in ds_train])
    assert ((ys > 0.01) & (ys < 0.99)).any()  # mixed
    x_val, y_val = (np.concatenate(part) for part in zip(*ds_val, strict=True))
    np.testing.assert_allclose(x_val, preprocess(val_imgs.pixels, "mobilenet_v2"), atol=1e-6)
    np.testing.assert_array_equal(y_val, val_imgs.targets)


@pytest.mark.slow  # trains a model
def test_a_run_with_photo_augment_mixup_focal_loss_and_class_weights(synthetic_dir, tmp_path):
    from click.testing import CliRunner

    from models.cli import cli

    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train", "--data", str(synthetic_dir), "--out", str(out),
            "--backbone", "mobilenetv2", "--image-size", str(SIZE), "--weights", "none",
            "--epochs", "1", "--batch-size", "16", "--loss", "focal",
            "--class-weight", "balanced", "--photo-augment", "--mixup", "0.2", "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    record = json.loads((out / "run.json").read_text())
    assert record["args"]["photo_augment"] is True and record["args"]["mixup"] == 0.2
    assert record["augmentation"]["jpeg_quality"] == [30, 95]
    assert np.isfinite(record["best_score"]) and record["val_metrics"]["n"] == 48
