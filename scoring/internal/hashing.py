"""Streaming SHA-256 of local files and pyarrow file-system URIs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

CHUNK = 4 * 2**20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream: Any) -> str:
    """SHA-256 of everything a binary stream yields, read in chunks (constant memory)."""
    h = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_json(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
