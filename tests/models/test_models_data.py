"""Finding, checking and decoding labeled data; what tf.data feeds the model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models.data import (
    Augmentation,
    decode_samples,
    discover_data,
    discover_eval_data,
    make_dataset,
    read_csv_samples,
)
from models.errors import DataError, UsageError
from models.imageio import load_image
from models.preprocessing import preprocess
from models.synthetic import write_synthetic_dataset


@pytest.fixture()
def small_dir(tmp_path: Path) -> Path:
    write_synthetic_dataset(tmp_path / "d", n_per_class=4, size=(40, 40), seed=3)
    return tmp_path / "d"


def test_train_val_folders(synthetic_dir: Path):
    data = discover_data(synthetic_dir)
    assert data.class_names == ("female", "male") and data.positive_class == "male"
    assert data.layout == "train/val folders"
    assert data.describe()["train_counts"] == {"female": 24, "male": 24}
    assert all("/val/" in s.path for s in data.val)
    assert discover_data(synthetic_dir, positive="female").positive_class == "female"


def test_class_folders_with_a_stratified_seeded_split(synthetic_dir: Path):
    a = discover_data(synthetic_dir / "train", val_split=0.25, seed=1)
    b = discover_data(synthetic_dir / "train", val_split=0.25, seed=1)
    assert a.layout == "class folders + split" and a == b
    assert a.describe()["val_counts"] == {"female": 6, "male": 6}
    assert not {s.path for s in a.train} & {s.path for s in a.val}
    with pytest.raises(UsageError, match="--val-split must be between 0 and 1"):
        discover_data(synthetic_dir / "train", val_split=0.0)


def test_csv_paths_are_relative_to_the_csv(synthetic_dir: Path):
    samples, splits = read_csv_samples(synthetic_dir / "train.csv")
    assert splits is None and len(samples) == 48
    folder = {(s.path, s.label) for s in discover_data(synthetic_dir).train}
    assert {(str(Path(s.path)), s.label) for s in samples} == folder
    data = discover_data(synthetic_dir / "val.csv", val_split=0.5)
    assert data.layout == "csv" and len(data.train) == len(data.val) == 24
    evals, where = discover_eval_data(synthetic_dir)
    assert where.endswith("val") and len(evals) == 48


def test_csv_split_column_and_bad_csvs(tmp_path: Path, small_dir: Path):
    rows = ["path,label,split"]
    for split in ("train", "val"):
        for p in sorted((small_dir / split).rglob("*.jpg")):
            rows.append(f"{p.relative_to(small_dir)},{p.parent.name},{split}")
    (small_dir / "all.csv").write_text("\n".join(rows) + "\n")
    data = discover_data(small_dir / "all.csv")
    assert data.layout == "csv+split" and len(data.train) == len(data.val) == 8
    (tmp_path / "nolabel.csv").write_text("path,gender\na.jpg,male\n")
    with pytest.raises(DataError, match="needs columns path,label; missing label"):
        discover_data(tmp_path / "nolabel.csv")
    (tmp_path / "blank.csv").write_text("path,label\na.jpg,male\n,female\n")
    with pytest.raises(DataError, match=r"empty path or label on line\(s\) 3"):
        discover_data(tmp_path / "blank.csv")


def test_bad_data_errors_name_the_problem(tmp_path: Path, small_dir: Path):
    with pytest.raises(DataError, match="data not found: .*nowhere"):
        discover_data(tmp_path / "nowhere")
    one = tmp_path / "one"
    shutil.copytree(small_dir / "train" / "male", one / "male")
    with pytest.raises(DataError, match=r"only one class \('male'\)"):
        discover_data(one)
    empty = tmp_path / "empty"
    (empty / "female").mkdir(parents=True)
    (empty / "male").mkdir()
    (empty / "male" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no images in .*empty"):
        discover_data(empty)
    with pytest.raises(DataError, match="no class folders"):
        discover_data(empty / "female")
    with pytest.raises(DataError, match="--positive 'man' is not a class .*female, male"):
        discover_data(small_dir, positive="man")
    three = tmp_path / "three"
    shutil.copytree(small_dir / "train", three)
    shutil.copytree(small_dir / "train" / "male", three / "other")
    with pytest.raises(DataError, match="3 classes"):
        discover_data(three)


def test_unreadable_training_image_fails_or_is_skipped_by_name(small_dir: Path):
    bad = small_dir / "train" / "male" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = discover_data(small_dir)
    with pytest.raises(DataError, match=r"1 unreadable image\(s\) in training data: .*broken\.jpg"):
        decode_samples(data.train, 32, data.positive_class, what="training data")
    decoded = decode_samples(data.train, 32, data.positive_class, bad_images="skip")
    assert len(decoded) == 8 and [b.path for b in decoded.bad] == [str(bad)]
    assert decoded.bad[0].code in ("unsupported", "decode_error")


def test_decoded_pixels_are_the_scoring_loader_pixels_and_what_tfdata_feeds(synthetic_dir):
    data = discover_data(synthetic_dir)
    decoded = decode_samples(data.val, (36, 32), data.positive_class, workers=2)
    assert decoded.pixels.shape == (48, 36, 32, 3) and decoded.pixels.dtype == np.uint8
    for i in (0, 17, 47):
        np.testing.assert_array_equal(decoded.pixels[i], load_image(decoded.paths[i], (36, 32)))
    assert decoded.targets.tolist() == [int(lb == "male") for lb in decoded.labels]

    ds = make_dataset(decoded, batch_size=16, preprocessing="none")
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    fed = np.concatenate(xs)
    expected = np.stack([load_image(p, (36, 32)) for p in decoded.paths])
    np.testing.assert_array_equal(fed, expected.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate(ys), decoded.targets)

    pre = np.concatenate(
        [x.numpy() for x, _ in make_dataset(decoded, batch_size=16, preprocessing="resnet50")]
    )
    np.testing.assert_allclose(pre, preprocess(expected, "resnet50"), atol=1e-4)


def test_augmentation_and_oversampling(synthetic_dir):
    data = discover_data(synthetic_dir)
    train = data.train[:30]  # 24 female, 6 male: imbalanced
    decoded = decode_samples(train, 32, data.positive_class)
    assert np.bincount(decoded.targets).tolist() == [24, 6]
    ds = make_dataset(decoded, batch_size=8, oversample=True, seed=1)
    ys = np.concatenate([y.numpy() for _, y in ds])
    assert len(ys) == 48 and 12 <= ys.sum() <= 36  # both classes drawn about equally
    plain = np.concatenate([x.numpy() for x, _ in make_dataset(decoded, batch_size=30)])
    aug = np.concatenate(
        [x.numpy() for x, _ in make_dataset(decoded, batch_size=30, augmentation=Augmentation())]
    )
    assert aug.shape == plain.shape and aug.min() >= 0 and aug.max() <= 255
    assert np.abs(aug - plain).mean() > 1.0
