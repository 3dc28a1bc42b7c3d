"""What a converted model says about itself, stored in the ONNX file's ``metadata_props``.

The scorer needs nothing but the ``.onnx`` file: :func:`read_metadata` returns a typed
:class:`ModelMetadata` using only the ``onnx`` package (base install, no TensorFlow).

Every key is ``genderscore.<field>``; lists and mappings are stored as JSON strings so any ONNX
viewer shows them readably. Keys this version does not know are kept in
:attr:`ModelMetadata.extra` (newer writers, diagnostics such as the parity figures).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from models.descriptor import ModelDescriptor
from models.errors import DataError
from models.framing import Framing
from models.preprocessing import PREPROCESSING

#: The model file's graph interface (docs/contracts.md, "the model file"): one uint8 NHWC
#: input, then P(positive class) and its log-odds, in this order.
INPUT_NAME = "image"
PROB_OUTPUT = "prob"
LOGIT_OUTPUT = "logit"
OUTPUT_NAMES = (PROB_OUTPUT, LOGIT_OUTPUT)

#: Bumped when a key changes meaning or a required key is added. 2: ``framing`` (a reader of
#: version 1 would score a face-framed model on whole images, so it must refuse it).
SCHEMA_VERSION = 2
PREFIX = "genderscore."

_REQUIRED = (
    "schema_version",
    "name",
    "backbone",
    "input_size",
    "class_names",
    "positive_class",
    "preprocessing",
    "source_sha256",
    "versions",
    "created_at",
    "quantization",
)
_JSON_FIELDS = frozenset({"input_size", "class_names", "versions", "quantization", "framing"})


@dataclass(frozen=True, kw_only=True)
class ModelMetadata(ModelDescriptor):
    """The contract between ``convert`` and the scorer (docs/models-and-convert.md, Metadata):
    the model's descriptor (name, input size, classes) and how it was made."""

    schema_version: int
    backbone: str
    preprocessing: str
    source_sha256: str
    versions: dict[str, str]
    created_at: str
    quantization: dict[str, Any] | None = None
    #: How images are cut before the model sees them; models of schema 1 are ``off``.
    framing: Framing = field(default_factory=Framing)
    #: Other ``genderscore.*`` keys (JSON-decoded where they parse), e.g. ``parity``, ``head``.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _validate(self)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries (key -> string value) for this metadata."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data["framing"] = self.framing.to_dict()
        props = {PREFIX + k: _encode(k, v) for k, v in data.items()}
        extra = dict(self.extra)
        for k, v in extra.items():
            props[PREFIX + k] = json.dumps(v, sort_keys=True)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "model") -> ModelMetadata:
        """Parse ``metadata_props``; a :class:`DataError` names what is missing or wrong."""
        ours = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not ours:
            raise DataError(
                f"{source} has no genderscore metadata: convert the Keras model with"
                " 'genderscore convert' first"
            )
        missing = [k for k in _REQUIRED if k not in ours]
        if missing:
            raise DataError(f"{source}: metadata lacks {', '.join(PREFIX + k for k in missing)}")
        values: dict[str, Any] = {}
        for key in _REQUIRED:
            raw = ours[key]
            try:
                values[key] = json.loads(raw) if key in _JSON_FIELDS else raw
            except json.JSONDecodeError:
                raise DataError(f"{source}: metadata {PREFIX}{key} is not JSON: {raw!r}") from None
        try:
            values["schema_version"] = int(values["schema_version"])
        except ValueError:
            raise DataError(
                f"{source}: schema_version must be an integer, got {values['schema_version']!r}"
            ) from None
        if values["schema_version"] > SCHEMA_VERSION:
            raise DataError(
                f"{source} uses metadata schema {values['schema_version']}; this genderscore"
                f" reads up to {SCHEMA_VERSION}: upgrade genderscore"
            )
        values["input_size"] = _pair(values["input_size"], "input_size", source)
        values["class_names"] = _pair(values["class_names"], "class_names", source)
        framing = Framing.from_dict(
            _decode_extra(ours["framing"]) if "framing" in ours else None,
            f"{source}: metadata {PREFIX}framing",
        )
        extra = {
            k: _decode_extra(v) for k, v in ours.items() if k not in _REQUIRED and k != "framing"
        }
        try:
            return cls(**values, framing=framing, extra=extra)
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None


def read_metadata(path: str | os.PathLike[str] | Any) -> ModelMetadata:
    """The metadata of a converted model (a path to an ``.onnx`` file, or an ``onnx.ModelProto``)."""
    import onnx

    if isinstance(path, onnx.ModelProto):
        return ModelMetadata.from_props({p.key: p.value for p in path.metadata_props})
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such model file: {path}")
    try:
        # Weights stay unread when they are external; the props sit in the main file.
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for non-ONNX files
        raise DataError(f"{path} is not an ONNX model: {type(exc).__name__}: {exc}") from None
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(path))


def set_metadata(model: Any, metadata: ModelMetadata) -> None:
    """Replace the ``genderscore.*`` entries of an ``onnx.ModelProto``'s ``metadata_props``."""
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.to_props().items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _validate(m: ModelMetadata) -> None:
    """What metadata adds to the descriptor's own checks."""
    if m.preprocessing not in PREPROCESSING:
        raise DataError(
            f"unknown preprocessing {m.preprocessing!r} (known: {', '.join(PREPROCESSING)})"
        )
    if m.quantization is not None and not isinstance(m.quantization, dict):
        raise DataError(f"quantization must be a mapping or null, got {m.quantization!r}")


def _encode(key: str, value: Any) -> str:
    if key in _JSON_FIELDS:
        return json.dumps(list(value) if isinstance(value, tuple) else value, sort_keys=True)
    return str(value)


def _decode_extra(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _pair(value: Any, key: str, source: str) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise DataError(f"{source}: metadata {PREFIX}{key} must be a 2-element list, got {value!r}")
    return value[0], value[1]
