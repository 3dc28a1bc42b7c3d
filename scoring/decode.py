"""Ray Data decode step: read and decode each image once, one array column per input size.

Every row comes out with ``status``/``error_code``/``error``; a failed row keeps a zero image
(tensor columns need a fixed shape) that the scorer never looks at.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from models.imageio import (
    ErrorCode,
    ImageError,
    Size,
    StorageUnreachable,
    as_hw,
    check_path,
    decode_image,
    read_image_bytes,
)
from scoring.storage import RemoteReads, is_uri

STATUS_OK = "ok"
STATUS_ERROR = "error"


def image_column(size: Size) -> str:
    """The name of the decoded-image column for one ``(h, w)`` input size."""
    h, w = as_hw(size)
    return f"__image_{h}x{w}"


def normalise_root(root: str | os.PathLike[str] | None) -> str | None:
    """``--root`` as the decode tasks compare against it: a real local path or a URI prefix."""
    if root is None:
        return None
    text = os.fspath(root)
    if "://" in text and not text.startswith("file://"):
        scheme, rest = text.split("://", 1)
        return f"{scheme}://{posixpath.normpath(rest)}"
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        text = unquote(urlparse(text).path)
    return os.path.realpath(os.path.expanduser(text))


def within_root(path: str, root: str) -> bool:
    """True when ``path`` lies inside ``root`` (``normalise_root`` form); symlinks are followed,
    so a link pointing out of the root is outside."""
    if "://" in root:
        if "://" not in path:
            return False
        scheme, rest = path.split("://", 1)
        norm = f"{scheme}://{posixpath.normpath(rest)}"
        return norm == root or norm.startswith(root.rstrip("/") + "/")
    if "://" in path:
        return False
    real = os.path.realpath(path)
    return os.path.commonpath([real, root]) == root


@dataclass
class DecodedBatch:
    """Per-row outcome of decoding a list of paths."""

    ok: np.ndarray  # bool (n,)
    codes: list[str | None]
    messages: list[str | None]
    images: dict[tuple[int, int], np.ndarray]  # (h, w) -> uint8 (n, h, w, 3)


def decode_paths(
    paths: Sequence[str],
    sizes: Sequence[Size],
    *,
    root: str | None = None,
    reads: RemoteReads | None = None,
) -> DecodedBatch:
    """Read and decode each path once; a failure is recorded with its stable code, never raised
    (but StorageUnreachable: the store, not the row, failed). Object-store paths are fetched
    together first, as ``reads`` says (concurrency, deadline, storage options)."""
    hw = list(dict.fromkeys(as_hw(s) for s in sizes))
    n = len(paths)
    images = {s: np.zeros((n, s[0], s[1], 3), dtype=np.uint8) for s in hw}
    ok = np.zeros(n, dtype=bool)
    codes: list[str | None] = [None] * n
    messages: list[str | None] = [None] * n
    fetched = _fetch_remote(paths, root, reads or RemoteReads())
    for i, path in enumerate(paths):
        try:
            check_path(path)  # before --root: a NUL byte would make realpath raise
            if root is not None and not within_root(path, root):
                raise ImageError(ErrorCode.OUTSIDE_ROOT, f"{path} is outside --root {root}")
            data = fetched[i] if i in fetched else read_image_bytes(path)
            if isinstance(data, ImageError):
                raise data
            arrays = decode_image(data, hw)
        except ImageError as exc:
            codes[i], messages[i] = str(exc.code), exc.message
            continue
        except StorageUnreachable:
            raise
        except Exception as exc:  # a night's run must not die on one file Pillow trips over
            codes[i] = str(ErrorCode.DECODE_ERROR)
            messages[i] = f"unexpected {type(exc).__name__} while decoding {path}: {exc}"
            continue
        for s, arr in zip(hw, arrays, strict=True):
            images[s][i] = arr
        ok[i] = True
    return DecodedBatch(ok=ok, codes=codes, messages=messages, images=images)


def _fetch_remote(paths: Sequence[str], root: str | None, reads: RemoteReads) -> dict[int, object]:
    """Row -> bytes or ImageError, for the object-store paths a row may read."""
    rows = [
        i
        for i, p in enumerate(paths)
        if isinstance(p, str)
        and is_uri(p)
        and "\x00" not in p
        and (root is None or within_root(p, root))
    ]
    if not rows:
        return {}
    return dict(zip(rows, reads.fetch([paths[i] for i in rows]), strict=True))


def decode_batch(
    batch: pa.Table,
    sizes: Sequence[Size],
    root: str | None = None,
    reads: RemoteReads | None = None,
) -> pa.Table:
    """Ray Data ``map_batches`` function (pyarrow format): adds ``status``, ``error_code``,
    ``error`` and one tensor column per size."""
    from ray.data.extensions import ArrowTensorArray

    paths = batch.column("path").to_pylist()
    decoded = decode_paths(paths, sizes, root=root, reads=reads)
    out = batch
    status = np.where(decoded.ok, STATUS_OK, STATUS_ERROR)
    out = out.append_column("status", pa.array(status.tolist(), pa.string()))
    out = out.append_column("error_code", pa.array(decoded.codes, pa.string()))
    out = out.append_column("error", pa.array(decoded.messages, pa.string()))
    for size, arr in decoded.images.items():
        out = out.append_column(image_column(size), ArrowTensorArray.from_numpy(arr))
    return out
