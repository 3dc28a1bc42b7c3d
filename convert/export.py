"""Keras model -> ONNX graph: uint8 image in, preprocessing and head inside, ``prob`` and
``logit`` out.

The graph is a ``tf.function`` over ``uint8 [batch, H, W, 3]`` that casts, applies the shared
preprocessing (:func:`models.preprocessing.preprocess`, the same function training used),
runs the model up to its last Dense layer and computes the positive-class logit explicitly
(:mod:`convert.head`). It is frozen with TensorFlow's own variable-to-constant pass, then
converted by ``tf2onnx.convert.from_graph_def``: ``tf2onnx.convert.from_keras`` does not
handle Keras 3 models well, and ``from_function`` would turn tensors Keras captures (e.g. the
Normalization statistics of EfficientNet) into extra graph inputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from convert.head import LinearHead
from convert.inspection import ModelStructure
from convert.loading import LoadedModel
from convert.metadata import INPUT_NAME, OUTPUT_NAMES
from models.errors import GenderscoreError
from models.preprocessing import preprocess

BATCH_DIM = "batch"
#: ONNX node-name prefixes of the parts outside the backbone (kept fp32 by INT8 quantization).
PREPROCESS_SCOPE = "preprocess"
HEAD_SCOPE = "head"
DEFAULT_OPSET = 17
MIN_OPSET = 13  # per-channel QDQ quantization and Slice with negative steps


def export_onnx(
    loaded: LoadedModel,
    structure: ModelStructure,
    head: LinearHead,
    preprocessing: str,
    input_size: tuple[int, int],
    *,
    opset: int = DEFAULT_OPSET,
) -> Any:
    """Build the ONNX ``ModelProto`` (no metadata yet) for ``loaded``."""
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    model_cls = loaded.model_class()
    # One input tensor, not a list: Keras 3 warns when a list-input model gets a bare tensor.
    features = model_cls(loaded.model.inputs[0], structure.features)
    height, width = input_size
    input_dtype = tf.as_dtype(structure.input_dtype)
    weights = tf.constant(head.weights.reshape(-1, 1), dtype=tf.float32)
    bias = tf.constant(head.bias, dtype=tf.float32)
    signature = [tf.TensorSpec([None, height, width, 3], tf.uint8, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def classify(image: Any) -> tuple[Any, Any]:
        with tf.name_scope(PREPROCESS_SCOPE):
            x = preprocess(tf.cast(image, tf.float32), preprocessing)
            if input_dtype != tf.float32:
                x = tf.cast(x, input_dtype)
        z = features(x, training=False)
        with tf.name_scope(HEAD_SCOPE):
            z = tf.reshape(tf.cast(z, tf.float32), [-1, weights.shape[0]])
            logit = tf.reshape(tf.matmul(z, weights), [-1]) + bias
            prob = tf.sigmoid(logit)
        return prob, logit

    with _quiet_conversion():
        frozen = convert_variables_to_constants_v2(classify.get_concrete_function())
        graph_def = frozen.graph.as_graph_def()
        inputs = [t.name for t in frozen.inputs]
        outputs = [t.name for t in frozen.outputs]
        if len(inputs) != 1 or len(outputs) != 2:
            raise GenderscoreError(
                f"freezing the model left inputs {inputs} and outputs {outputs}; expected one"
                " image input and two outputs (the model captures state conversion cannot fold)"
            )
        rename = {inputs[0]: INPUT_NAME, outputs[0]: OUTPUT_NAMES[0], outputs[1]: OUTPUT_NAMES[1]}
        try:
            proto, _ = tf2onnx.convert.from_graph_def(
                graph_def,
                name=loaded.path.stem,
                input_names=inputs,
                output_names=outputs,
                opset=opset,
                tensors_to_rename=rename,
            )
        except Exception as exc:
            raise GenderscoreError(
                f"tf2onnx could not convert the model: {type(exc).__name__}: {exc}"
            ) from exc
    _name_batch_dim(proto)
    _check_interface(proto)
    return proto


def _name_batch_dim(proto: Any) -> None:
    for value in [*proto.graph.input, *proto.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM


def _check_interface(proto: Any) -> None:
    """The contract every later stage relies on (docs/contracts.md, The model file)."""
    import onnx

    got_in = [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input]
    got_out = [(o.name, o.type.tensor_type.elem_type) for o in proto.graph.output]
    want_in = [(INPUT_NAME, onnx.TensorProto.UINT8)]
    want_out = [(n, onnx.TensorProto.FLOAT) for n in OUTPUT_NAMES]
    if got_in != want_in or got_out != want_out:
        raise GenderscoreError(
            f"converted graph has inputs {got_in} and outputs {got_out}; expected {want_in}"
            f" and {want_out}"
        )


@contextlib.contextmanager
def _quiet_conversion() -> Iterator[None]:
    """tf2onnx: no per-optimizer graph copies (they copy every weight, ~30 graph copies for
    ResNet50: 3x slower) and no INFO chatter; restore both afterwards."""
    import tf2onnx.constants

    key = tf2onnx.constants.ENV_TF2ONNX_CATCH_ERRORS
    old_env = os.environ.get(key)
    os.environ[key] = "FALSE"
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old_env
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def onnx_session(model: Any, *, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session over a ``ModelProto``, bytes or a path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnx(
    session: Any, images: np.ndarray, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """``(prob, logit)`` float32 arrays for uint8 images, in batches."""
    probs, logits = [], []
    for start in range(0, len(images), batch_size):
        prob, logit = session.run(
            list(OUTPUT_NAMES), {INPUT_NAME: images[start : start + batch_size]}
        )
        probs.append(prob)
        logits.append(logit)
    if not probs:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(probs), np.concatenate(logits)
