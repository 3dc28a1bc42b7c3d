"""Real conversions of the three backbones (small, random weights): ``.keras`` and legacy
``.h5`` (tf_keras, focal loss), sigmoid and two-way softmax heads, every preprocessing mode.
The ONNX output is compared with the Keras model on the same uint8 images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from convert_builders import build_keras3, tiny_cnn

from convert.converter import convert_model
from convert.metadata import read_metadata
from models.errors import DataError
from models.imageio import load_image
from models.preprocessing import preprocess
from models.runinfo import sha256_file, write_run_info


def val_images(synthetic_dir: Path, size: tuple[int, int], n: int = 16) -> np.ndarray:
    """``n`` validation images of both classes, through the shared loader."""
    paths = sorted((synthetic_dir / "val").rglob("*.jpg"))
    picked = paths[:: max(1, len(paths) // n)][:n]
    return np.stack([load_image(str(p), size) for p in picked])


def keras_positive(
    model, images: np.ndarray, preprocessing: str, positive_index: int
) -> np.ndarray:
    """P(positive) straight from the Keras model's own output."""
    out = np.asarray(model(preprocess(images, preprocessing), training=False), dtype=np.float64)
    if out.shape[1] == 1:
        return out[:, 0] if positive_index == 1 else 1 - out[:, 0]
    return out[:, positive_index]


def onnx_run(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    prob, logit = session.run(None, {"image": images})
    return prob, logit


def test_shared_models_follow_the_onnx_contract(onnx_models, keras_models, synthetic_dir):
    import keras

    assert set(onnx_models) == {"mobilenetv2", "efficientnetb0", "resnet50"}
    for name, path in onnx_models.items():
        meta = read_metadata(path)
        assert (meta.name, meta.backbone, meta.class_names, meta.positive_class) == (
            name,
            name,
            ("female", "male"),
            "male",
        )
        assert meta.quantization is None and meta.schema_version == 2
        assert meta.source_sha256 == sha256_file(keras_models[name])
        assert {"tensorflow", "tf2onnx", "onnx", "onnxruntime", "keras3", "opset"} <= set(
            meta.versions
        )
        assert meta.extra["parity"]["passed"] and meta.extra["parity"]["max_abs_logit_diff"] <= 1e-4

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        assert (inp.name, inp.type, inp.shape) == (
            "image",
            "tensor(uint8)",
            ["batch", *meta.input_size, 3],
        )
        assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
            ("prob", "tensor(float)", ["batch"]),
            ("logit", "tensor(float)", ["batch"]),
        ]
        images = val_images(synthetic_dir, meta.input_size)
        prob, logit = session.run(None, {"image": images})
        assert prob.dtype == np.float32 and prob.shape == (len(images),)
        np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logit.astype(np.float64))), atol=1e-6)
        one, _ = session.run(None, {"image": images[:1]})
        np.testing.assert_allclose(one, prob[:1], atol=1e-5)

        model = keras.saving.load_model(keras_models[name], compile=False)
        expected = keras_positive(model, images, meta.preprocessing, 1)
        np.testing.assert_allclose(prob, expected, atol=1e-4)
        assert prob.std() > 0.01, f"{name}: outputs should vary across images"


@pytest.mark.parametrize(
    "name",
    [
        "mobilenetv2_seq_softmax",
        # builds, saves and converts a legacy .h5 each: the fast selection keeps one
        pytest.param("efficientnetb0_func_sigmoid", marks=pytest.mark.slow),
        pytest.param("resnet50_seq_activation", marks=pytest.mark.slow),
    ],
)
def test_legacy_h5_with_custom_loss_converts_with_parity(name, h5_models, synthetic_dir, tmp_path):
    import tf_keras

    path, preprocessing = h5_models[name]
    result = convert_model(
        path, tmp_path / "m.onnx", preprocess=preprocessing, check_data=synthetic_dir / "val"
    )
    meta = result.metadata
    assert result.parity.passed and result.parity.source == str(synthetic_dir / "val")
    assert result.parity.n_images == 48
    assert meta.backbone == name.split("_")[0] and meta.preprocessing == preprocessing
    assert meta.extra["source_format"] == "h5" and "tf_keras" in meta.versions
    assert meta.extra["head"]["kind"] == ("sigmoid" if "sigmoid" in name else "softmax")
    assert result.preprocessing_check is not None  # labeled check data: every mode scored

    images = val_images(synthetic_dir, meta.input_size)
    prob, _ = onnx_run(result.path, images)
    model = tf_keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(prob, keras_positive(model, images, preprocessing, 1), atol=1e-4)


def test_keras3_softmax_with_the_first_class_positive(tmp_path, synthetic_dir):
    import keras

    path = build_keras3(tmp_path / "softmax.keras", "mobilenetv2", "rescale", units=2, c=0.02)
    result = convert_model(
        path,
        tmp_path / "female.onnx",
        preprocess="rescale",
        class_names=("female", "male"),
        positive="female",
        name="p_female_model",
    )
    meta = result.metadata
    assert meta.positive_class == "female" and meta.extra["head"]["positive_index"] == 0
    images = val_images(synthetic_dir, meta.input_size)
    prob, logit = onnx_run(result.path, images)
    model = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(prob, keras_positive(model, images, "rescale", 0), atol=1e-4)
    assert np.all((prob > 0.5) == (logit > 0))


def test_auto_takes_the_training_record_and_checks_its_hash(keras_models, tmp_path):
    run = tmp_path / "mnv2_run"
    run.mkdir()
    model = run / "model.keras"
    shutil.copy(keras_models["mobilenetv2"], model)
    record = {
        "class_names": ["female", "male"],
        "positive_class": "male",
        "preprocessing": "mobilenet_v2",
        "image_size": [48, 48],
        "backbone": "mobilenetv2",
        "model_sha256": sha256_file(model),
    }
    write_run_info(run, record)
    result = convert_model(run, tmp_path / "auto.onnx")  # the run folder itself
    meta = result.metadata
    assert meta.preprocessing == "mobilenet_v2" and meta.name == "mnv2_run"
    assert meta.extra["settings_from"]["preprocessing"] == "run.json"

    write_run_info(run, record | {"model_sha256": "0" * 64})
    with pytest.raises(DataError, match="changed after training"):
        convert_model(model, tmp_path / "stale.onnx")
    assert not (tmp_path / "stale.onnx").exists()


def test_tf_keras_savedmodel_folder_converts(tmp_path, synthetic_dir):
    import tf_keras

    tf_keras.utils.set_random_seed(3)
    model = tiny_cnn(tf_keras)
    folder = tmp_path / "exported"
    model.save(folder)  # tf_keras: a folder path writes a SavedModel
    result = convert_model(folder, tmp_path / "sm.onnx", preprocess="rescale", name="tiny")
    assert result.metadata.extra["source_format"] == "savedmodel"
    images = val_images(synthetic_dir, (32, 32))
    prob, _ = onnx_run(result.path, images)
    np.testing.assert_allclose(prob, keras_positive(model, images, "rescale", 1), atol=1e-4)
    # The ONNX file is self-contained: the metadata reader needs nothing else.
    assert read_metadata(onnx.load(str(result.path))).name == "tiny"
