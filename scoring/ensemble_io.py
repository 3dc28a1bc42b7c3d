"""Reading, writing and versioning ensemble.json (docs/contracts.md, "the ensemble file"):
the text on disk and its content hash; :mod:`scoring.ensemble_spec` checks what it holds."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.errors import DataError
from scoring.internal.hashing import sha256_json

# Keys that describe a tuning run (when, where the scores were) rather than what was tuned:
# left out of the version hash so the same data and seed give the same version.
UNHASHED = ("version", "created_at", "tuned_with")


def content_version(content: Mapping[str, Any]) -> str:
    """The version of an ensemble: SHA-256 (16 hex) of its canonical JSON, without the keys
    that describe the run (``version``, ``created_at``, ``tuned_with``)."""
    return sha256_json({k: v for k, v in content.items() if k not in UNHASHED})[:16]


def read_ensemble_json(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; a DataError says why it cannot be read and what to give."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"ensemble file {path} does not exist: make one with 'genderscore ensemble tune'"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read ensemble file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(
            f"ensemble file {path} is not a JSON text file (not UTF-8): give the "
            "ensemble.json that 'genderscore ensemble tune' wrote"
        ) from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"ensemble file {path} is not valid JSON: {exc}") from None
    if not isinstance(content, dict):
        raise DataError(f"ensemble file {path} must hold a JSON object")
    return content


def write_ensemble_json(content: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``content`` as indented JSON (no NaN: the file is read by any JSON reader)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
