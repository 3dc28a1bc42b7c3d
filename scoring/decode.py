"""Ray Data decode step: read and decode each image once, find its face once, and add one
array column per (input size, framing) the models need.

Every row comes out with ``status``/``error_code``/``error`` and the face columns (``faces``,
``face_box``, ``face_score``: null when no model frames faces); a failed row keeps a zero image
(tensor columns need a fixed shape) that the scorer never looks at.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from models.framing import Framing
from models.imageio import (
    ErrorCode,
    ImageError,
    Size,
    StorageUnreachable,
    as_hw,
    check_path,
    decode_framed,
    read_image_bytes,
)
from scoring.storage import RemoteReads, is_uri

STATUS_OK = "ok"
STATUS_ERROR = "error"


#: The face columns every output has, in order (see the README's Output schema).
FACE_FIELDS = (
    pa.field("faces", pa.int32()),
    pa.field("face_box", pa.list_(pa.float32())),
    pa.field("face_score", pa.float32()),
)

#: One model input to cut from each image: its size and its framing.
Request = tuple[tuple[int, int], Framing]


def image_column(size: Size, framing: Framing | None = None) -> str:
    """The name of the decoded-image column for one ``(h, w)`` input size and framing; models
    whose framings cut the same pixels share it."""
    h, w = as_hw(size)
    key = (framing or Framing()).pixels_key
    return f"__image_{h}x{w}" if key == "full" else f"__image_{h}x{w}_{key}"


def unique_requests(requests: Sequence[tuple[Size, Framing]]) -> list[Request]:
    """One request per image column; where models share a column but one requires a face,
    the request keeps ``require`` (the row then needs a face for every model)."""
    out: dict[str, Request] = {}
    for size, framing in requests:
        col = image_column(size, framing)
        if col not in out or framing.mode == "require":
            out[col] = (as_hw(size), framing)
    return sorted(out.values(), key=lambda r: image_column(*r))


def normalise_root(root: str | os.PathLike[str] | None) -> str | None:
    """``--root`` as the scorer actors compare against it: a real local path or a URI prefix."""
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
    images: dict[str, np.ndarray]  # image column -> uint8 (n, h, w, 3)
    faces: list[int | None]
    boxes: list[list[float] | None]
    scores: list[float | None]


def decode_paths(
    paths: Sequence[str],
    requests: Sequence[tuple[Size, Framing]],
    *,
    root: str | None = None,
    reads: RemoteReads | None = None,
) -> DecodedBatch:
    """Read and decode each path once, cut each request; a failure is recorded with its stable
    code, never raised (but StorageUnreachable: the store, not the row, failed). Object-store
    paths are fetched together first, as ``reads`` says (concurrency, deadline, options)."""
    reqs = unique_requests(requests)
    n = len(paths)
    images = {image_column(*r): np.zeros((n, r[0][0], r[0][1], 3), np.uint8) for r in reqs}
    ok = np.zeros(n, dtype=bool)
    codes: list[str | None] = [None] * n
    messages: list[str | None] = [None] * n
    faces: list[int | None] = [None] * n
    boxes: list[list[float] | None] = [None] * n
    scores: list[float | None] = [None] * n
    fetched = _fetch_remote(paths, root, reads or RemoteReads())
    for i, path in enumerate(paths):
        try:
            check_path(path)  # before --root: a NUL byte would make realpath raise
            if root is not None and not within_root(path, root):
                raise ImageError(ErrorCode.OUTSIDE_ROOT, f"{path} is outside --root {root}")
            data = fetched[i] if i in fetched else read_image_bytes(path)
            if isinstance(data, ImageError):
                raise data
            framed = decode_framed(data, reqs)
        except ImageError as exc:
            codes[i], messages[i] = str(exc.code), exc.message
            continue
        except StorageUnreachable:
            raise
        except Exception as exc:  # a night's run must not die on one file Pillow trips over
            codes[i] = str(ErrorCode.DECODE_ERROR)
            messages[i] = f"unexpected {type(exc).__name__} while decoding {path}: {exc}"
            continue
        for r, arr in zip(reqs, framed.arrays, strict=True):
            images[image_column(*r)][i] = arr
        ok[i] = True
        faces[i], scores[i] = framed.faces, framed.score
        boxes[i] = list(framed.box) if framed.box is not None else None
    return DecodedBatch(ok, codes, messages, images, faces, boxes, scores)


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
    requests: Sequence[tuple[Size, Framing]],
    root: str | None = None,
    reads: RemoteReads | None = None,
) -> pa.Table:
    """Ray Data ``map_batches`` function (pyarrow format): adds ``status``, ``error_code``,
    ``error``, the face columns and one tensor column per image column."""
    from ray.data.extensions import ArrowTensorArray

    paths = batch.column("path").to_pylist()
    decoded = decode_paths(paths, requests, root=root, reads=reads)
    out = batch
    status = np.where(decoded.ok, STATUS_OK, STATUS_ERROR)
    out = out.append_column("status", pa.array(status.tolist(), pa.string()))
    out = out.append_column("error_code", pa.array(decoded.codes, pa.string()))
    out = out.append_column("error", pa.array(decoded.messages, pa.string()))
    faces, box, score = FACE_FIELDS
    out = out.append_column(faces, pa.array(decoded.faces, faces.type))
    out = out.append_column(box, pa.array(decoded.boxes, box.type))
    out = out.append_column(score, pa.array(decoded.scores, score.type))
    for name, arr in decoded.images.items():
        out = out.append_column(name, ArrowTensorArray.from_numpy(arr))
    return out
