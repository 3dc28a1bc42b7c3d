"""The Keras side of every check: the loaded model run on numpy-preprocessed images.

Preprocessing here is :func:`models.preprocessing.preprocess` on numpy, while the ONNX graph
applies the same definition to TensorFlow tensors inside the graph; the parity check compares
the two paths end to end from the same uint8 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convert.head import LinearHead, positive_probability
from convert.inspection import ModelStructure
from convert.loading import LoadedModel
from models.preprocessing import preprocess


@dataclass
class KerasOutputs:
    """Positive-class log-odds (from the features, float64) and probability (model output)."""

    logit: np.ndarray
    prob: np.ndarray


class KerasReference:
    """Runs the model to its features and its output in one pass."""

    def __init__(
        self,
        loaded: LoadedModel,
        structure: ModelStructure,
        head: LinearHead,
        batch_size: int = 32,
    ):
        self.loaded = loaded
        self.structure = structure
        self.head = head
        self.batch_size = batch_size
        self._both: Any = None

    def run(self, images: np.ndarray, preprocessing: str) -> KerasOutputs:
        """Outputs for uint8 ``(n, h, w, 3)`` images under ``preprocessing``."""
        if self._both is None:
            model = self.loaded.model
            self._both = self.loaded.model_class()(
                model.inputs[0], [self.structure.features, model.outputs[0]]
            )
        dtype = self.structure.input_dtype
        head = self.head
        logits, probs = [], []
        for start in range(0, len(images), self.batch_size):
            x = preprocess(
                images[start : start + self.batch_size].astype(np.float32), preprocessing
            )
            z, out = self._both(x.astype(dtype), training=False)
            z = np.asarray(z, dtype=np.float64).reshape(len(x), -1)
            logits.append(head.logit(z))
            probs.append(positive_probability(np.asarray(out), head.kind, head.positive_index))
        if not logits:
            return KerasOutputs(np.zeros(0), np.zeros(0))
        return KerasOutputs(np.concatenate(logits), np.concatenate(probs))
