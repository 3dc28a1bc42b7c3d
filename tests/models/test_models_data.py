"""Finding, checking and decoding labeled data; what tf.data feeds the model."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.data import (
    Augmentation,
    DecodedImages,
    decode_samples,
    degrade_photos,
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


#: No geometric or brightness transforms: what is left is the photo degradations alone.
NO_GEOMETRY = Augmentation(flip=False, rotation=0.0, zoom=0.0, shift=0.0, brightness=0.0, shear=0.0)
#: Each degradation alone, applied to every image, and what it must do besides changing them.
DEGRADATIONS = {
    "contrast": {"contrast": 0.5},
    "saturation": {"saturation": 0.5},
    "blur": {"blur_sigma": 1.5},
    "resolution": {"min_scale": 0.35},
    "jpeg": {"jpeg_quality": (30, 95)},
}


@pytest.fixture()
def faces(synthetic_dir: Path) -> DecodedImages:
    data = discover_data(synthetic_dir)
    return decode_samples(data.val[::3], 32, data.positive_class)  # 16 images, both classes


def _key(i: int):
    import tensorflow as tf

    return tf.constant([i, 7], tf.int64)


def _variation(x: np.ndarray) -> np.ndarray:
    """Total variation per image: how much fine detail it has."""
    return np.abs(np.diff(x, axis=1)).sum((1, 2, 3)) + np.abs(np.diff(x, axis=2)).sum((1, 2, 3))


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_each_photo_degradation_changes_pixels_within_range_and_is_seeded(name, faces):
    import tensorflow as tf

    aug = replace(NO_GEOMETRY, photo_p=1.0, **DEGRADATIONS[name])
    assert aug.degrades_photos
    x = faces.pixels.astype(np.float32)
    out = degrade_photos(tf.constant(x), aug, _key(1)).numpy()
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255 and np.abs(out - x).mean() > 0.5
    np.testing.assert_array_equal(out, degrade_photos(tf.constant(x), aug, _key(1)).numpy())
    assert not np.array_equal(out, degrade_photos(tf.constant(x), aug, _key(2)).numpy())
    inside = (out > 0) & (out < 255)  # not clipped
    if name == "contrast":  # one factor per image, around each channel's mean
        mean = x.mean((1, 2), keepdims=True)
        ratio = (out - mean) / np.where(np.abs(x - mean) > 5, x - mean, np.nan)
        for r, keep in zip(ratio, inside, strict=True):
            assert np.nanmax(r[keep]) - np.nanmin(r[keep]) < 1e-3
    elif name == "saturation":  # each pixel's grey kept
        grey = np.array([0.299, 0.587, 0.114], np.float32)
        keep = inside.all(axis=-1)
        np.testing.assert_allclose((out @ grey)[keep], (x @ grey)[keep], atol=1e-3)
    elif name in ("blur", "resolution"):  # fine detail lost, never gained
        assert (_variation(out) <= _variation(x) * 1.001).all()
        assert _variation(out).sum() < 0.9 * _variation(x).sum()
    else:  # decoded JPEG: whole numbers
        np.testing.assert_array_equal(out, np.round(out))


def test_photo_degradations_apply_per_image_with_their_probability(faces):
    import tensorflow as tf

    x = faces.pixels.astype(np.float32)
    aug = replace(NO_GEOMETRY, photo_p=0.5, jpeg_quality=(30, 95), min_scale=0.35)
    out = degrade_photos(tf.constant(x), aug, _key(3)).numpy()
    same = np.array([np.array_equal(a, b) for a, b in zip(out, x, strict=True)])
    assert 0 < same.sum() < len(x)  # the others are left exactly as they were
    never = degrade_photos(tf.constant(x), replace(aug, photo_p=0.0), _key(3)).numpy()
    np.testing.assert_array_equal(never, x)


def test_photo_augmentation_in_tfdata_is_seeded_new_each_epoch_and_off_by_default(faces):
    def epoch(ds) -> np.ndarray:
        return np.concatenate([x.numpy() for x, _ in ds])

    aug = NO_GEOMETRY.with_photo_degradations()
    ds = make_dataset(faces, batch_size=8, augmentation=aug, seed=5)
    first, second = epoch(ds), epoch(ds)
    assert first.min() >= 0 and first.max() <= 255
    assert not np.array_equal(first, second)  # new draws every epoch
    np.testing.assert_array_equal(
        first, epoch(make_dataset(faces, batch_size=8, augmentation=aug, seed=5))
    )
    assert not np.array_equal(
        first, epoch(make_dataset(faces, batch_size=8, augmentation=aug, seed=6))
    )
    # Off by default; never chosen, the pixels are exactly those without it.
    assert not Augmentation().degrades_photos
    plain = faces.pixels.astype(np.float32)
    for without in (NO_GEOMETRY, replace(aug, photo_p=0.0)):
        ds = make_dataset(faces, batch_size=8, augmentation=without, seed=5)
        np.testing.assert_array_equal(epoch(ds), plain)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_blends_images_targets_and_class_weights_alike(alpha):
    n = 32  # black images are class 0, white ones class 1: a pixel / 255 is its target
    pixels = np.zeros((n, 4, 4, 3), np.uint8)
    pixels[n // 2 :] = 255
    targets = (np.arange(n) >= n // 2).astype(np.int64)
    labels = ["female" if t == 0 else "male" for t in targets]
    images = DecodedImages(pixels, targets, [f"{i}.png" for i in range(n)], labels)
    ds = make_dataset(
        images, batch_size=16, mixup=alpha, class_weight={0: 1.0, 1: 3.0}, shuffle=True, seed=2
    )
    ys = []
    for x, y, w in ds:
        x, y, w = x.numpy(), y.numpy(), w.numpy()
        assert y.min() >= 0 and y.max() <= 1
        np.testing.assert_allclose(
            x / 255, np.broadcast_to(y[:, None, None, None], x.shape), atol=1e-5
        )
        np.testing.assert_allclose(w, 1.0 + 2.0 * y, rtol=1e-6)  # the mix of the two weights
        ys.append(y)
    ys = np.concatenate(ys)
    assert len(ys) == n and ((ys > 0.01) & (ys < 0.99)).any()
    # Without mixup (validation), the images and targets as they are.
    (x, y), (x2, y2) = make_dataset(images, batch_size=16)
    np.testing.assert_array_equal(np.concatenate([x, x2]), pixels.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([y, y2]), targets)
