"""Models the convert tests build: legacy ``.h5`` files written by ``tf_keras`` the way TF 2.x
``tf.keras`` wrote them (compiled with a custom focal loss), Keras 3 variants and tiny
special cases. Real architectures, small (48 px), random weights with BatchNorm statistics
from data and a head fitted by logistic regression, so outputs vary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 48


def faces(n: int, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic faces (uint8) with alternating labels (0 female, 1 male)."""
    from models.synthetic import synthetic_face

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return np.stack([np.asarray(synthetic_face(int(y), rng, (size, size))) for y in labels]), labels


def fit_linear_head(features: np.ndarray, labels: np.ndarray, units: int, c: float):
    """Kernel and bias for a final Dense(units) whose positive-class logit separates labels."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, max_iter=2000).fit(features, labels)
    w, b = lr.coef_[0].astype("float32"), np.float32(lr.intercept_[0])
    if units == 1:
        return w[:, None], np.array([b])
    # softmax([u0, u1]) gives P(class 1) = sigmoid(u1 - u0).
    return np.stack([-w / 2, w / 2], axis=1), np.array([-b / 2, b / 2], dtype="float32")


def focal_loss(gamma: float = 2.0, alpha: float = 0.25):
    """The kind of custom loss the teams compiled with (its code is not needed to convert)."""
    import tensorflow as tf

    def focal(y_true, y_pred):
        y_pred = tf.clip_by_value(y_pred, 1e-7, 1 - 1e-7)
        y_true = tf.cast(y_true, y_pred.dtype)
        pt = tf.where(y_true > 0.5, y_pred, 1 - y_pred)
        return -tf.reduce_mean(alpha * tf.pow(1 - pt, gamma) * tf.math.log(pt))

    return focal


def calibrate_and_fit(keras_lib, model, base, dense, x, labels, units, c):
    """BatchNorm statistics from ``x`` (momentum 0, one training-mode pass), then the head."""
    for layer in base.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = 0.0
    model(x, training=True)
    features = keras_lib.Model(model.inputs[0], dense.input)(x, training=False).numpy()
    dense.set_weights(list(fit_linear_head(features, labels, units, c)))


def build_tf_keras_h5(
    path: Path,
    backbone: str,
    preprocessing: str,
    *,
    style: str,
    units: int,
    separate_activation: bool = False,
    train_step: bool = False,
    c: float = 0.1,
) -> Path:
    """A legacy ``.h5`` written by ``tf_keras``: ``style`` "sequential" wraps the base,
    "functional" calls it on an Input; compiled with the focal loss."""
    import tf_keras

    from models.preprocessing import preprocess

    tf_keras.utils.set_random_seed(1)
    app = {
        "mobilenetv2": tf_keras.applications.MobileNetV2,
        "efficientnetb0": tf_keras.applications.EfficientNetB0,
        "resnet50": tf_keras.applications.ResNet50,
    }[backbone]
    base = app(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    activation = "linear" if separate_activation else ("sigmoid" if units == 1 else "softmax")
    dense = tf_keras.layers.Dense(units, activation=activation, name="classifier")
    tail = (
        [tf_keras.layers.Activation("softmax" if units == 2 else "sigmoid")]
        if separate_activation
        else []
    )
    if style == "sequential":
        model = tf_keras.Sequential(
            [
                tf_keras.Input((SIZE, SIZE, 3)),
                base,
                tf_keras.layers.GlobalAveragePooling2D(),
                dense,
                *tail,
            ]
        )
    else:
        inputs = tf_keras.Input((SIZE, SIZE, 3), name="face")
        x = tf_keras.layers.GlobalAveragePooling2D()(base(inputs))
        x = dense(x)
        for layer in tail:
            x = layer(x)
        model = tf_keras.Model(inputs, x)
    images, labels = faces(48)
    x = preprocess(images, preprocessing)
    y = labels if units == 1 else np.eye(2)[labels]
    model.compile(optimizer="adam", loss=focal_loss())
    if train_step:
        model.train_on_batch(x[:16], y[:16])
    calibrate_and_fit(tf_keras, model, base, dense, x, labels, units, c)
    model.save(path)
    return path


def build_keras3(
    path: Path,
    backbone: str,
    preprocessing: str,
    *,
    units: int,
    sequential: bool = True,
    c: float = 0.1,
) -> Path:
    """A Keras 3 ``.keras`` model (Sequential wrapping the base, by default)."""
    import keras

    from models.preprocessing import preprocess
    from models.registry import get_backbone

    keras.utils.set_random_seed(2)
    base = get_backbone(backbone).constructor()(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)
    )
    dense = keras.layers.Dense(units, activation="sigmoid" if units == 1 else "softmax")
    layers = [keras.Input((SIZE, SIZE, 3)), base, keras.layers.GlobalAveragePooling2D(), dense]
    model = keras.Sequential(layers)
    images, labels = faces(48)
    calibrate_and_fit(
        keras, model, base, dense, preprocess(images, preprocessing), labels, units, c
    )
    model.save(path)
    return path


def tiny_cnn(keras_lib, size: int = 32, *, lambda_layer: bool = False, outputs: int = 1):
    """A small functional CNN (fast to convert) for the input/output/safety cases."""
    inputs = keras_lib.Input((size, size, 3))
    x = inputs
    if lambda_layer:
        x = keras_lib.layers.Lambda(lambda t: t * 2.0)(x)
    x = keras_lib.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras_lib.layers.GlobalAveragePooling2D()(x)
    heads = [
        keras_lib.layers.Dense(1, activation="sigmoid", name=f"out{i}")(x) for i in range(outputs)
    ]
    return keras_lib.Model(inputs, heads if outputs > 1 else heads[0])


def train_small_cnn(path: Path, data_root: Path, preprocessing: str, size: int = 32) -> Path:
    """A small CNN really trained (40 epochs, seconds) on ``data_root/train`` under
    ``preprocessing``: it ranks well only when fed that preprocessing."""
    import csv

    import keras

    from models.imageio import load_image
    from models.preprocessing import preprocess

    rows = list(csv.DictReader(open(data_root / "train.csv")))
    x = np.stack([load_image(str(data_root / r["path"]), size) for r in rows])
    y = np.array([r["label"] == "male" for r in rows], dtype="float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(32, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy", jit_compile=False)
    model.fit(preprocess(x, preprocessing), y, epochs=40, batch_size=32, verbose=0)
    model.save(path)
    return path
