"""One model descriptor for every stage: the name rule, the scores column ``p_<name>``, the
input size and the classes of a binary classifier.

``convert`` writes these fields into the ONNX metadata, ``scoring`` reads them back and names
its output columns by them, and the ensemble file records them per member; each stage extends
:class:`ModelDescriptor` with what only it knows (metadata versions, the file's SHA-256, ...).
Only the standard library: a scoring node imports this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from models.errors import DataError

#: A model name becomes the scoring column ``p_<name>``: keep it a plain identifier.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
NAME_RULE = "a letter then letters, digits or '_' (at most 64)"
COLUMN_PREFIX = "p_"


def column_name(name: str) -> str:
    """The scores column holding model ``name``'s probabilities."""
    return f"{COLUMN_PREFIX}{name}"


def check_model_name(
    name: Any, what: str = "model name", error: type[Exception] = DataError
) -> str:
    """``name`` if it follows the name rule; else ``error`` naming ``what`` and the rule."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise error(
            f"{what} {name!r} must be {NAME_RULE}: it becomes the scoring column "
            f"{column_name('<name>')}"
        )
    return name


@dataclass(frozen=True, kw_only=True)
class ModelDescriptor:
    """A binary classifier as every stage names and feeds it; checked on construction
    (:class:`DataError` naming the field)."""

    name: str
    input_size: tuple[int, int]
    class_names: tuple[str, str]
    positive_class: str

    def __post_init__(self) -> None:
        check_model_name(self.name)
        # JSON gives lists; the descriptor keeps tuples so it is hashable and compares equal.
        for key in ("input_size", "class_names"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        names = self.class_names
        if (
            not isinstance(names, tuple)
            or len(names) != 2
            or not all(isinstance(n, str) and n for n in names)
            or names[0] == names[1]
        ):
            raise DataError(f"class_names must be two distinct names, got {list(names)!r}")
        if self.positive_class not in names:
            raise DataError(f"positive_class {self.positive_class!r} is not one of {list(names)}")
        size = self.input_size
        if (
            not isinstance(size, tuple)
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise DataError(f"input_size must be two positive integers, got {size!r}")

    @property
    def column(self) -> str:
        """The scores column holding this model's probabilities."""
        return column_name(self.name)

    @property
    def positive_index(self) -> int:
        return self.class_names.index(self.positive_class)

    @property
    def negative_class(self) -> str:
        return self.class_names[1 - self.positive_index]

    def describe(self) -> dict[str, Any]:
        """The descriptor as JSON data, in the key order the scores and ensemble files use."""
        return {
            "name": self.name,
            "input_size": list(self.input_size),
            "class_names": list(self.class_names),
            "positive_class": self.positive_class,
        }
