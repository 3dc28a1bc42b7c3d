"""The backbone registry and the one preprocessing definition (numpy and TensorFlow alike)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from models.errors import DataError, UsageError
from models.preprocessing import PREPROCESSING, get_preprocessing, preprocess
from models.registry import BACKBONE_NAMES, HEADS, HeadSpec, get_backbone, match_backbone
from models.runinfo import RunInfo, read_run_info, sha256_file, write_run_info


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)


def test_registry_names_constructors_and_preprocessing():
    assert BACKBONE_NAMES == ("mobilenetv2", "resnet50", "efficientnetb0")
    expected = {
        "mobilenetv2": ("MobileNetV2", "mobilenet_v2", "dense"),
        "resnet50": ("ResNet50", "resnet50", "dense128-64"),
        "efficientnetb0": ("EfficientNetB0", "efficientnet", "dense"),
    }
    for name, (app, prep, head) in expected.items():
        b = get_backbone(name)
        assert (b.application, b.preprocessing, b.default_head, b.default_size) == (
            app,
            prep,
            head,
            224,
        )
        assert b.constructor().__name__ == app
    assert HEADS["dense128-64"].units == (128, 64)
    assert match_backbone("mobilenetv2_1.00_224").name == "mobilenetv2"
    assert match_backbone("sequential") is None


def test_unknown_names_list_the_choices():
    with pytest.raises(UsageError, match="unknown backbone 'vgg16': choose one of mobilenetv2"):
        get_backbone("vgg16")
    with pytest.raises(UsageError, match="unknown preprocessing 'torch'.*rescale"):
        get_preprocessing("torch")
    with pytest.raises(UsageError, match="dropout must be in"):
        HeadSpec(units=(8,), dropout=1.0)


def test_preprocessing_matches_keras_applications():
    from keras.applications import efficientnet, mobilenet_v2, resnet50

    x = _pixels()
    keras_fns = {
        "mobilenet_v2": mobilenet_v2.preprocess_input,
        "resnet50": resnet50.preprocess_input,
        "efficientnet": efficientnet.preprocess_input,
    }
    for mode, fn in keras_fns.items():
        ours = preprocess(x, mode)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, fn(x.astype(np.float32).copy()), rtol=0, atol=1e-5)
    np.testing.assert_allclose(preprocess(x, "rescale"), x / 255.0, atol=1e-6)
    np.testing.assert_array_equal(preprocess(x, "none"), x.astype(np.float32))


def test_preprocessing_same_on_tf_tensors_and_input_untouched():
    import tensorflow as tf

    x = _pixels(1).astype(np.float32)
    before = x.copy()
    for mode in PREPROCESSING:
        out_np = preprocess(x, mode)
        out_tf = preprocess(tf.constant(x), mode)
        assert out_tf.dtype == tf.float32
        np.testing.assert_allclose(out_tf.numpy(), out_np, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(x, before)
    bgr = preprocess(x, "resnet50")
    np.testing.assert_allclose(bgr[..., 0], x[..., 2] - 103.939, atol=1e-4)
    assert get_preprocessing("resnet50").as_dict()["channel_order"] == "BGR"


def test_preprocessing_module_imports_without_tensorflow():
    code = (
        "import sys, models.preprocessing, models.registry, models.runinfo;"
        "print(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _record(**kw):
    rec = {
        "backbone": "mobilenetv2",
        "class_names": ["female", "male"],
        "positive_class": "male",
        "preprocessing": "mobilenet_v2",
        "image_size": [32, 32],
        "model_file": "model.keras",
    }
    rec.update(kw)
    return rec


def test_run_info_round_trip_and_hash_check(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    write_run_info(tmp_path, _record(model_sha256=sha256_file(model)))
    info = read_run_info(model)
    assert isinstance(info, RunInfo)
    assert info.class_names == ("female", "male") and info.positive_index == 1
    assert info.negative_class == "female" and info.image_size == (32, 32)
    assert read_run_info(tmp_path) == info  # the run folder works too
    other = tmp_path / "other.keras"
    other.write_bytes(b"else")
    assert read_run_info(other) is None  # run.json describes a different file
    model.write_bytes(b"changed")
    with pytest.raises(DataError, match="changed after training"):
        read_run_info(model)
    assert read_run_info(tmp_path / "nowhere" / "m.keras") is None


def test_run_info_refuses_bad_records(tmp_path):
    with pytest.raises(DataError, match="positive_class 'boy' is not one of"):
        write_run_info(tmp_path, _record(positive_class="boy"))
    with pytest.raises(DataError, match="missing key"):
        RunInfo.from_dict({"class_names": ["a", "b"]})
    (tmp_path / "run.json").write_text(json.dumps(_record(preprocessing="torch")))
    (tmp_path / "model.keras").write_bytes(b"x")
    with pytest.raises(DataError, match="unknown preprocessing 'torch'"):
        read_run_info(tmp_path / "model.keras")
