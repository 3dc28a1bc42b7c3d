"""Bad inputs give one clear error each; code stored in a model file never runs unasked."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from convert_builders import tiny_cnn

from convert.converter import convert_model
from convert.errors import ParityError
from convert.loading import UnsafeLoadWarning
from models.cli_support import run_cli
from models.errors import DataError, UsageError


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    tiny_cnn(keras).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_h5(tmp_path_factory) -> Path:
    """A tf.keras-style .h5, compiled with a custom loss and trained a step (optimizer
    state saved)."""
    import tf_keras
    from convert_builders import focal_loss

    tf_keras.utils.set_random_seed(0)
    model = tiny_cnn(tf_keras)
    model.compile(optimizer="adam", loss=focal_loss())
    x = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 3)).astype("float32")
    model.train_on_batch(x, np.arange(8) % 2)
    path = tmp_path_factory.mktemp("tiny_h5") / "tiny.h5"
    model.save(path)
    return path


def test_tiny_h5_with_optimizer_state_converts(tiny_h5, tmp_path):
    result = convert_model(tiny_h5, tmp_path / "t.onnx", preprocess="rescale")
    assert result.parity.passed and result.metadata.backbone == "unknown"
    assert result.metadata.name == "tiny"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a Keras model \\(an empty file\\)"),
        (b"<html>not a model</html>", "not a Keras model \\(a file starting with b'<htm'\\)"),
    ],
)
def test_a_file_that_is_not_a_model(tmp_path, content, message):
    path = tmp_path / "model.keras"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        convert_model(path, tmp_path / "out.onnx", preprocess="rescale")
    assert not (tmp_path / "out.onnx").exists()


def test_a_zip_that_is_not_a_keras_file(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(DataError, match="zip file without config.json"):
        convert_model(path, tmp_path / "out.onnx", preprocess="rescale")


def test_a_truncated_h5(tiny_h5, tmp_path):
    data = tiny_h5.read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError, match=r"cut.h5 is an HDF5 file that cannot be read \(truncated or damaged\?\)"
    ):
        convert_model(path, tmp_path / "out.onnx", preprocess="rescale")


def test_weights_only_h5(tmp_path):
    import tf_keras

    path = tmp_path / "weights.h5"
    tiny_cnn(tf_keras).save_weights(path)
    with pytest.raises(DataError, match="holds weights only"):
        convert_model(path, tmp_path / "out.onnx", preprocess="rescale")


def test_two_outputs(tmp_path):
    import keras

    path = tmp_path / "two.keras"
    tiny_cnn(keras, outputs=2).save(path)
    with pytest.raises(
        UsageError,
        match=r"has 2 outputs \(out0, out1\); genderscore converts models with one output",
    ):
        convert_model(path, tmp_path / "out.onnx", preprocess="rescale")


def test_non_image_input(tmp_path):
    import keras

    inputs = keras.Input((10,))
    path = tmp_path / "tabular.keras"
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs)).save(path)
    with pytest.raises(UsageError, match=r"input has shape \(None, 10\), not an image batch"):
        convert_model(path, tmp_path / "out.onnx", preprocess="rescale")


def test_multiclass_head(tmp_path):
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    path = tmp_path / "three.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    with pytest.raises(UsageError, match=r"output has shape \(None, 3\)"):
        convert_model(path, tmp_path / "out.onnx", preprocess="rescale")


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_lambda_layers_need_unsafe_load(tmp_path, library):
    import importlib

    lib = importlib.import_module(library)
    path = tmp_path / ("lambda.keras" if library == "keras" else "lambda.h5")
    lib.utils.set_random_seed(0)
    tiny_cnn(lib, lambda_layer=True).save(path)
    with pytest.raises(UsageError, match="contains Lambda layer.*would run on load.*--unsafe-load"):
        convert_model(path, tmp_path / "out.onnx", preprocess="rescale")
    assert not (tmp_path / "out.onnx").exists()
    with pytest.warns(UnsafeLoadWarning, match="Lambda layer code runs"):
        result = convert_model(path, tmp_path / "out.onnx", preprocess="rescale", unsafe_load=True)
    assert result.parity.passed


def test_cli_errors_are_one_line(tmp_path, capsys, tiny_keras):
    from convert.cli import cli

    (tmp_path / "notes.txt").write_text("hello")
    code = run_cli(
        cli,
        "genderscore convert",
        [str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o.onnx"), "--preprocess", "rescale"],
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not a Keras model" in err

    code = run_cli(cli, "genderscore convert", [str(tiny_keras), "--out", str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--preprocess auto" in err and "mobilenet_v2|resnet50|efficientnet|rescale|none" in err

    code = run_cli(
        cli, "genderscore convert", [str(tiny_keras), "--out", "x.onnx", "--class-names", "a"]
    )
    assert code == 2 and "two distinct names" in capsys.readouterr().err


def test_cli_converts_and_reports(tmp_path, capsys, tiny_keras):
    from convert.cli import cli

    out = tmp_path / "tiny.onnx"
    code = run_cli(
        cli,
        "genderscore convert",
        [str(tiny_keras), "--out", str(out), "--preprocess", "mobilenet_v2", "--name", "tiny_cnn"],
    )
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert (
        f"wrote {out}" in text
        and "column p_tiny_cnn" in text
        and "parity: max |logit difference|" in text
    )


def test_cli_help_explains_every_option(capsys):
    from convert.cli import cli

    assert run_cli(cli, "genderscore convert", ["--help"]) == 0
    text = capsys.readouterr().out
    for option in (
        "--out",
        "--preprocess",
        "--class-names",
        "--positive",
        "--name",
        "--opset",
        "--check-data",
        "--int8",
        "--calibration",
        "--force",
        "--unsafe-load",
    ):
        assert option in text
    assert all(p.help for p in cli.params if p.param_type_name == "option")


def test_parity_failure_stops_the_write(keras_models, tmp_path, capsys):
    from convert.cli import cli

    out = tmp_path / "strict.onnx"
    args = [
        str(keras_models["mobilenetv2"]),
        "--out",
        str(out),
        "--preprocess",
        "mobilenet_v2",
        "--parity-tolerance",
        "1e-9",
    ]
    code = run_cli(cli, "genderscore convert", args)
    err = capsys.readouterr().err
    assert (
        code == 1 and "parity check failed on 16 generated images" in err and "not written" in err
    )
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ParityError, match=r"differ from Keras by up to \d"):
        convert_model(
            keras_models["mobilenetv2"], out, preprocess="mobilenet_v2", parity_tolerance=1e-9
        )


def test_keras3_legacy_h5_converts(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path / "k3.h5"
    tiny_cnn(keras).save(path)
    result = convert_model(path, tmp_path / "k3.onnx", preprocess="rescale")
    assert result.metadata.extra["source_format"] == "h5" and "keras3" in result.metadata.versions


def test_metadata_reads_without_tensorflow(tiny_keras, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "tiny.onnx"
    convert_model(tiny_keras, out, preprocess="rescale", name="tiny")
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None;"
        " sys.modules['tf2onnx'] = None\n"
        "from convert.metadata import read_metadata\n"
        f"m = read_metadata({str(out)!r}); print(m.column, m.input_size)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "p_tiny (32, 32)"
