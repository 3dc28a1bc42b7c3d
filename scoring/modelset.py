"""The ONNX models a scoring run uses: metadata, SHA-256 and the graph interface, checked once
on the driver before any work starts."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convert.metadata import INPUT_NAME, PROB_OUTPUT
from models.descriptor import ModelDescriptor
from models.errors import DataError, GenderscoreError, UsageError
from models.framing import Framing
from scoring.internal.hashing import sha256_bytes

#: A model's keys in the scores file's metadata and in ensemble.json, in their order.
MODEL_FILE_KEYS = ("name", "path", "sha256", "input_size", "class_names", "positive_class")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True)
class ModelFile(ModelDescriptor):
    """A model file as the scores and ensemble files record it: its descriptor, where it was
    and the SHA-256 that pins it."""

    path: str
    sha256: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise DataError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r:.80}")

    def to_dict(self) -> dict[str, Any]:
        """The model's entry in the scores file's metadata and in ensemble.json."""
        entry = self.describe() | {"path": self.path, "sha256": self.sha256}
        return {key: entry[key] for key in MODEL_FILE_KEYS}


@dataclass(frozen=True, kw_only=True)
class ModelRef(ModelFile):
    """One model as the scorer and the output metadata know it."""

    #: How the scorer cuts this model's input from a photo (its metadata's, or ``--faces``).
    framing: Framing = Framing()

    def to_dict(self) -> dict[str, Any]:
        """The model's entry in the scores file's metadata and the summary."""
        return {**super().to_dict(), "framing": self.framing.to_dict()}


def load_models(paths: Sequence[str | os.PathLike[str]]) -> list[ModelRef]:
    """Read and check every model file; UsageError/DataError name the file and the fix."""
    if not paths:
        raise UsageError("no models given: pass --models A.onnx [B.onnx ...] or --ensemble E.json")
    refs = [load_model(p) for p in paths]
    seen: dict[str, str] = {}
    for ref in refs:
        if ref.name in seen:
            raise UsageError(
                f"two models are named {ref.name!r} ({seen[ref.name]} and {ref.path}): each "
                "model's name becomes its column p_<name>; convert one with another --name"
            )
        seen[ref.name] = ref.path
    return refs


def load_model(path: str | os.PathLike[str]) -> ModelRef:
    """One model: its ``convert`` metadata, SHA-256 of the file, and the graph interface
    (docs/contracts.md, "the model file")."""
    import onnx

    from convert.metadata import read_metadata

    p = Path(path).expanduser().absolute()
    if not p.is_file():
        raise UsageError(f"model file {path} does not exist (or is not a file)")
    data = p.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for non-ONNX bytes
        raise DataError(f"{p} is not an ONNX model: {type(exc).__name__}: {exc}") from None
    try:
        meta = read_metadata(proto)
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from None
    check_interface(proto, meta.input_size, str(p))
    return ModelRef(
        name=meta.name,
        path=str(p),
        sha256=sha256_bytes(data),
        input_size=meta.input_size,
        class_names=meta.class_names,
        positive_class=meta.positive_class,
        framing=meta.framing,
    )


def check_interface(proto: Any, input_size: tuple[int, int], source: str) -> None:
    """DataError unless the graph takes uint8 ``image`` [batch, H, W, 3] and outputs ``prob``."""
    import onnx

    fix = "convert the Keras model with 'genderscore convert'"
    inputs = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = [i.name for i in inputs]
        raise DataError(f"{source}: expected one graph input {INPUT_NAME!r}, got {names}; {fix}")
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.UINT8:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        raise DataError(f"{source}: input {INPUT_NAME!r} is {dtype}, expected uint8; {fix}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    h, w = input_size
    if len(dims) != 4 or dims[3] != 3 or dims[1] not in (None, h) or dims[2] not in (None, w):
        raise DataError(
            f"{source}: input {INPUT_NAME!r} has shape {dims}, expected [batch, {h}, {w}, 3] "
            f"(NHWC, as its metadata's input_size says); {fix}"
        )
    outputs = [o.name for o in proto.graph.output]
    if not outputs or outputs[0] != PROB_OUTPUT:
        raise DataError(f"{source}: the first output must be {PROB_OUTPUT!r}, got {outputs}; {fix}")


def read_model_bytes(ref: ModelRef) -> bytes:
    """The file's bytes, checked against the SHA-256 taken when the run started."""
    data = Path(ref.path).read_bytes()
    if sha256_bytes(data) != ref.sha256:
        raise GenderscoreError(
            f"model file {ref.path} changed while the run was starting: rerun to score with "
            "one version of it"
        )
    return data
