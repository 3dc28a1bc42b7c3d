"""Fixtures shared by every stage's tests. Images are made by the tests, never shipped."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Object-store tests talk to the local S3 server of the `s3` fixture only: fake credentials,
# no profile, endpoint or region of the developer's, and no instance-metadata lookup (an
# address off this machine). Set here, before any Ray starts: Ray's workers keep the
# environment Ray was started with.
for _name in [n for n in os.environ if n.startswith(("AWS_", "GOOGLE_"))]:
    del os.environ[_name]
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from models.synthetic import write_synthetic_dataset  # noqa: E402

#: Tests that time a stop, a stall, a crash or a lost node on a real Ray. On a parallel run
#: (``-n 2 --dist loadgroup``, the README's command) they take turns on one worker, so that two
#: of them never share the machine's cores; everything else spreads over both.
TIMED_FAULTS = {
    "test_signals.py",
    "test_nightly_crash.py",
    "test_nightly_cluster.py",
    "test_stall.py",
    "test_faults.py",
    "test_object_storage_faults.py",
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups off the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in TIMED_FAULTS:
            item.add_marker(pytest.mark.xdist_group("timed-faults"))
            item.add_marker(pytest.mark.slow)  # each stops, kills or signals processes


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labeled folder: ``train/`` and ``val/`` with ``female``/``male`` JPEGs and CSVs."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, n_per_class=24, size=(64, 64), seed=7)
    return root


#: The small converted models every stage's tests share: name -> (backbone, size, preprocessing).
SMALL_MODELS = {
    "mobilenetv2": ("mobilenetv2", 48, "mobilenet_v2"),
    "efficientnetb0": ("efficientnetb0", 48, "efficientnet"),
    "resnet50": ("resnet50", 48, "resnet50"),
}


#: Logistic-regression C per backbone: logits spread as far as each random-weight backbone's
#: float32 round-off allows while keeping ONNX-vs-Keras logit parity well under 1e-4.
_HEAD_C = {"mobilenetv2": 1.0, "efficientnetb0": 0.1, "resnet50": 0.02}


def small_keras_model(backbone: str, size: int, preprocessing: str, seed: int = 0):
    """A registry model (random weights) whose outputs vary and track the synthetic labels:
    BatchNorm statistics come from synthetic faces (momentum 0, one training-mode pass),
    then the final Dense is fitted by logistic regression on the features it sees."""
    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from models.build import build_model
    from models.preprocessing import preprocess
    from models.synthetic import synthetic_face

    keras.utils.set_random_seed(seed)
    model = build_model(backbone, size, weights="none", head_units=(16,), dropout=0.0)
    for layer in model.layers[1].layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    rng = np.random.default_rng(seed)
    labels = np.arange(48) % 2
    faces = np.stack([np.asarray(synthetic_face(int(y), rng, (size, size))) for y in labels])
    x = preprocess(faces, preprocessing)
    model(x, training=True)
    last = model.layers[-1]
    features = keras.Model(model.inputs[0], last.input)(x, training=False).numpy()
    lr = LogisticRegression(C=_HEAD_C.get(backbone, 0.1), max_iter=2000).fit(features, labels)
    last.set_weights([lr.coef_.T.astype("float32"), lr.intercept_.astype("float32")])
    return model


@pytest.fixture(scope="session")
def keras_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> ``.keras`` file for the :data:`SMALL_MODELS` (mobilenetv2 48 px, efficientnetb0
    and resnet50 32 px; random weights, outputs not constant). Classes female,male."""
    root = tmp_path_factory.mktemp("keras_models")
    out = {}
    for name, (backbone, size, preprocessing) in SMALL_MODELS.items():
        path = root / f"{name}.keras"
        small_keras_model(backbone, size, preprocessing).save(path)
        out[name] = path
    return out


@pytest.fixture(scope="session")
def onnx_models(keras_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """name -> ``.onnx`` path: the :data:`SMALL_MODELS` converted by ``convert.convert_model``
    (fp32, parity-checked, metadata inside; P(male), classes female,male)."""
    from convert.converter import convert_model

    root = tmp_path_factory.mktemp("onnx_models")
    return {
        name: convert_model(
            keras_models[name],
            root / f"{name}.onnx",
            preprocess=SMALL_MODELS[name][2],
            class_names=("female", "male"),
            positive="male",
            name=name,
        ).path
        for name in SMALL_MODELS
    }


@pytest.fixture(scope="session")
def s3():
    """A real S3 server (moto) on 127.0.0.1 at a free port, behind a relay the tests can slow
    or cut (see ``s3_support``)."""
    from s3_support import start_server, stop_server

    server = start_server()
    yield server
    stop_server(server)
