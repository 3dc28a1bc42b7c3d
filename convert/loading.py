"""Load a Keras model for conversion: ``.keras`` (Keras 3), legacy ``.h5`` (TF 2.x ``tf.keras``
or Keras 3) and ``tf.keras`` SavedModel folders, never compiled and never running code stored
in the file unless the user says so.

The format is read from the file's first bytes, not its name. Models are loaded with
``compile=False``: the training loss (often a custom focal loss) is never needed. Keras 3
reads ``.keras`` files; ``tf_keras`` reads what ``tf.keras`` wrote (Keras 3 rejects some of
its layer configs, e.g. ``DepthwiseConv2D(groups=...)``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import DataError, UsageError

logger = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: Layers whose config carries Python code (marshalled bytecode or a function name).
CODE_LAYERS = frozenset({"Lambda"})


class UnsafeLoadWarning(UserWarning):
    """A model was loaded with code from the file allowed to run (``--unsafe-load``)."""


@dataclass(frozen=True)
class LoadedModel:
    """A loaded Keras model and what it was loaded with."""

    model: Any
    path: Path
    #: ``"keras"`` (zip), ``"h5"`` or ``"savedmodel"``.
    format: str
    #: ``"keras3"`` or ``"tf_keras"``: the library whose ``Model`` class builds sub-models.
    library: str
    library_version: str

    def model_class(self) -> Any:
        """``keras.Model`` or ``tf_keras.Model``, whichever loaded the model."""
        if self.library == "keras3":
            import keras

            return keras.Model
        import tf_keras

        return tf_keras.Model


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"keras"``, ``"h5"`` or ``"savedmodel"`` from the contents; :class:`DataError` otherwise."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise DataError(
            f"{path} is a folder without saved_model.pb: give a .keras or .h5 file, a"
            " SavedModel folder, or a genderscore training run folder (with run.json)"
        )
    if not path.exists():
        raise DataError(f"no such model file: {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head == HDF5_MAGIC:
        return "h5"
    what = "an empty file" if not head else f"a file starting with {head[:4]!r}"
    raise DataError(
        f"{path} is not a Keras model ({what}): expected a .keras file (zip), a legacy .h5"
        " (HDF5) file or a SavedModel folder"
    )


def load_keras_model(path: str | os.PathLike[str], *, unsafe_load: bool = False) -> LoadedModel:
    """Load ``path`` for inference only. Layers that run code stored in the file (``Lambda``)
    are refused unless ``unsafe_load``, which warns with :class:`UnsafeLoadWarning`."""
    path = Path(path)
    fmt = detect_format(path)
    config_layers = _config_classes(path, fmt)
    code_layers = sorted(config_layers & CODE_LAYERS)
    if code_layers:
        if not unsafe_load:
            raise UsageError(
                f"{path} contains {', '.join(code_layers)} layer(s), whose code is stored in"
                " the file and would run on load: convert only files you trust, with"
                " --unsafe-load"
            )
        warnings.warn(
            f"loading {path} with --unsafe-load: its {', '.join(code_layers)} layer code runs",
            UnsafeLoadWarning,
            stacklevel=2,
        )
    loader = {"keras": _load_keras3, "h5": _load_h5, "savedmodel": _load_savedmodel}[fmt]
    with warnings.catch_warnings():
        # Keras warns about optimizer/metric state it does not restore with compile=False.
        warnings.filterwarnings("ignore", message=".*(compile|optimizer|metrics).*")
        return loader(path, unsafe_load)


def _load_keras3(path: Path, unsafe_load: bool) -> LoadedModel:
    return _keras3_load(path, "keras", unsafe_load)


def _keras3_load(path: Path, fmt: str, unsafe_load: bool) -> LoadedModel:
    """Load with Keras 3, which picks its reader by suffix: a copy or link named ``.<fmt>``."""
    keras = _keras3()
    source = _with_suffix(path, f".{fmt}")
    try:
        model = keras.saving.load_model(str(source), compile=False, safe_mode=not unsafe_load)
    except Exception as exc:
        raise _load_error(path, exc) from None
    finally:
        _cleanup(source, path)
    return LoadedModel(model, path, fmt, "keras3", keras.__version__)


def _load_h5(path: Path, unsafe_load: bool) -> LoadedModel:
    attrs = _h5_attrs(path)
    keras_version = str(attrs.get("keras_version", ""))
    if keras_version.startswith("3."):
        # Written by Keras 3's legacy saver: Keras 3 reads its own configs best.
        return _keras3_load(path, "h5", unsafe_load)
    return _tf_keras_load(path, "h5")


def _load_savedmodel(path: Path, unsafe_load: bool) -> LoadedModel:
    if not (path / "keras_metadata.pb").is_file():
        raise DataError(
            f"{path} is a SavedModel without Keras metadata (for example from"
            " model.export()): genderscore needs the Keras model; save it with"
            " model.save('model.keras') or give the .h5 file"
        )
    return _tf_keras_load(path, "savedmodel")


def _tf_keras_load(path: Path, fmt: str) -> LoadedModel:
    """Load with tf-keras (Keras 2), the reader of TF 2.x's .h5 files and SavedModels."""
    tf_keras = _tf_keras()
    try:
        model = tf_keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise _load_error(path, exc) from None
    return LoadedModel(model, path, fmt, "tf_keras", tf_keras.__version__)


def _config_classes(path: Path, fmt: str) -> set[str]:
    """Every ``class_name`` in the model's architecture config, read without loading it."""
    if fmt == "keras":
        try:
            with zipfile.ZipFile(path) as zf:
                raw = zf.read("config.json")
        except KeyError:
            raise DataError(
                f"{path} is a zip file without config.json: not a .keras model"
            ) from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable .keras file (damaged zip): {exc}") from None
        return _classes_in(_json(raw, path))
    if fmt == "h5":
        config = _h5_attrs(path).get("model_config")
        if config is None:
            raise DataError(
                f"{path} holds weights only (no model_config): genderscore needs the whole"
                " model, saved with model.save(...)"
            )
        return _classes_in(_json(config, path))
    # A SavedModel keeps its Keras configs in a protobuf; look for the class names as text.
    meta = path / "keras_metadata.pb"
    if not meta.is_file():
        return set()
    raw = meta.read_bytes()
    return {name for name in CODE_LAYERS if f'"class_name": "{name}"'.encode() in raw}


def _h5_attrs(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return {k: _as_str(v) for k, v in fh.attrs.items()}
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path} is an HDF5 file that cannot be read (truncated or damaged?): {exc}"
        ) from None


def _classes_in(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = item.get("class_name")
            if isinstance(name, str):
                found.add(name)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _json(raw: Any, path: Path) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise DataError(f"{path}: the model config is not valid JSON: {exc}") from None


def _as_str(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _with_suffix(path: Path, suffix: str) -> Path:
    # Keras picks its reader from the extension; give it one without touching the user's file.
    if path.suffix.lower() in (suffix, ".hdf5" if suffix == ".h5" else suffix):
        return path
    import tempfile

    link = Path(tempfile.mkdtemp(prefix="genderscore-load-")) / f"model{suffix}"
    os.symlink(path.resolve(), link)
    return link


def _cleanup(source: Path, original: Path) -> None:
    if source != original:
        source.unlink(missing_ok=True)
        source.parent.rmdir()


def _load_error(path: Path, exc: Exception) -> DataError:
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "unknown layer" in lowered or "could not locate class" in lowered:
        return DataError(
            f"cannot load {path}: it uses a custom layer genderscore does not know ({text});"
            " replace it with standard Keras layers or save the model without it"
        )
    if "lambda" in lowered and "safe_mode" in lowered:
        return DataError(
            f"cannot load {path}: {text}. If you trust the file, convert it with --unsafe-load"
        )
    if len(text) > 400:
        text = text[:400] + "..."
    return DataError(f"cannot load {path} as a Keras model: {type(exc).__name__}: {text}")


def _keras3() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UsageError(
            f"Keras runs on the {keras.backend.backend()!r} backend; conversion needs"
            " TensorFlow: set KERAS_BACKEND=tensorflow"
        )
    return keras


def _tf_keras() -> Any:
    try:
        import tf_keras
    except ImportError:
        raise UsageError(
            "reading legacy tf.keras files needs the tf_keras package: pip install"
            " 'genderscore[train]'"
        ) from None
    return tf_keras
