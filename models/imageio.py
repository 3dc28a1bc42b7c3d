"""The one image loader: training, evaluation, conversion checks and scoring all call it,
so a file gives the same pixels at every stage.

A file becomes RGB uint8 ``(height, width, 3)``: EXIF orientation applied, grayscale, RGBA,
CMYK, palette and 16-bit images converted to RGB, then framed (:mod:`models.framing`): the
whole image resized (bilinear, aspect not kept, as Keras' directory loaders do), or the main
face found and aligned. Decoding and face detection happen once even when several sizes or
framings are wanted. Every failure is an :class:`ImageError` with a stable :class:`ErrorCode`.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.framing import FaceMode, FramedImage, Framing, frame_image

Size = int | tuple[int, int]
#: ``uri -> (pyarrow file system, path inside it)``
Resolver = Callable[[str], tuple[Any, str]]

#: Files larger than this are refused before reading (``too_large``).
MAX_FILE_BYTES = 64 * 2**20
#: Images with more pixels than this are refused from their header alone (``too_large``):
#: Pillow's decompression-bomb guard, at a bound that suits face photos.
MAX_PIXELS = 64 * 2**20
#: Aligned framings decode big JPEGs at a reduced scale (Pillow's draft mode) down to no less
#: than this many pixels on the short side: ample for a face crop, and a 60 Mpx photo decodes
#: in a fraction of the time and memory.
DRAFT_SIDE = 1024


class ErrorCode(StrEnum):
    """Stable codes for rows that could not be scored (README: Error codes)."""

    BAD_PATH = "bad_path"  # empty path cell, or one no file system accepts (a NUL byte)
    OUTSIDE_ROOT = "outside_root"  # path escapes --root
    NOT_FOUND = "not_found"
    NOT_A_FILE = "not_a_file"  # a folder or a device
    PERMISSION_DENIED = "permission_denied"
    READ_ERROR = "read_error"  # any other I/O failure
    EMPTY = "empty"  # zero bytes
    TOO_LARGE = "too_large"  # file bytes or pixel count over the bound
    UNSUPPORTED = "unsupported"  # not an image format Pillow reads (HTML, random bytes)
    DECODE_ERROR = "decode_error"  # a recognised format whose data is damaged (truncated)
    NO_FACE = "no_face"  # framing 'require' found no face
    TIMEOUT = "timeout"  # an object store did not deliver the object in time


class StorageUnreachable(OSError):
    """The object store itself cannot be used (endpoint unreachable, credentials refused):
    not one object's fault, so not a row error; the run fails and its rerun resumes."""


class ImageError(Exception):
    """An image that cannot be used, with a stable code and a message."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(f"{code}: {message}")
        self.code = ErrorCode(code)
        self.message = message


def as_hw(size: Size) -> tuple[int, int]:
    """``224`` -> ``(224, 224)``; ``(h, w)`` unchanged."""
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def check_path(path: object) -> None:
    """``bad_path`` unless ``path`` is text a file system can take (not blank, no NUL byte)."""
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise ImageError(ErrorCode.BAD_PATH, f"no usable path: {path!r}")


def read_image_bytes(
    path: str, *, max_bytes: int = MAX_FILE_BYTES, resolve: Resolver | None = None
) -> bytes:
    """Read a file's bytes from a local path or a pyarrow file-system URI (``s3://``, ...).

    ``resolve``: ``uri -> (file system, path inside it)`` for URIs (default: pyarrow's
    ``FileSystem.from_uri``). Raises :class:`ImageError`, or :class:`StorageUnreachable` when
    the store, not the object, fails."""
    check_path(path)
    if "://" in path and not path.startswith("file://"):
        return _read_uri(path, max_bytes, resolve)
    local = _file_uri_to_path(path) if path.startswith("file://") else path
    try:
        st = os.stat(local)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(ErrorCode.NOT_A_FILE, f"not a regular file: {path}")
        _check_size(st.st_size, path, max_bytes)
        with open(local, "rb") as fh:
            return fh.read()
    except ImageError:
        raise
    except (OSError, ValueError) as exc:
        raise _os_error(exc, path) or ImageError(
            ErrorCode.READ_ERROR, f"cannot read {path}: {exc}"
        ) from None


def _os_error(exc: Exception, path: str) -> ImageError | None:
    """The row error for a missing, non-regular or forbidden file; None for other errors."""
    if isinstance(exc, FileNotFoundError):
        return ImageError(ErrorCode.NOT_FOUND, f"no such file: {path}")
    if isinstance(exc, IsADirectoryError):
        return ImageError(ErrorCode.NOT_A_FILE, f"not a regular file: {path}")
    if isinstance(exc, PermissionError):
        return ImageError(ErrorCode.PERMISSION_DENIED, f"permission denied: {path}")
    return None


def _file_uri_to_path(uri: str) -> str:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(uri).path)


def _read_uri(uri: str, max_bytes: int, resolve: Resolver | None) -> bytes:
    from pyarrow import fs as pafs

    try:
        filesystem, inner = (resolve or pafs.FileSystem.from_uri)(uri)
        # Opening learns the size (one HEAD request on S3), reading is one GET: no separate
        # look-up first, a third fewer round trips per image.
        with filesystem.open_input_file(inner) as fh:
            _check_size(fh.size(), uri, max_bytes)
            return fh.read()
    except (ImageError, StorageUnreachable):
        raise
    except (OSError, ValueError) as exc:
        known = _os_error(exc, uri)
        if known is not None:
            raise known from None
        text = " ".join(str(exc).split())
        if "Not a regular file" in text or "is a directory" in text.lower():
            raise ImageError(ErrorCode.NOT_A_FILE, f"not a regular file: {uri}") from None
        kind = storage_failure(exc)
        if kind in ("unreachable", "credentials"):
            raise StorageUnreachable(f"cannot read {uri}: {text}") from None
        code = {"denied": ErrorCode.PERMISSION_DENIED, "timeout": ErrorCode.TIMEOUT}.get(
            kind or "", ErrorCode.READ_ERROR
        )
        raise ImageError(code, f"cannot read {uri}: {text}") from None


#: Substrings of pyarrow's S3 (AWS SDK) and GCS (google-cloud-cpp) error messages, by what
#: failed. Only the S3 ones are exercised by the tests (against a real S3 server).
_STORAGE_FAILURES = (
    ("timeout", ("curlCode: 28", "Timeout was reached", "DEADLINE_EXCEEDED")),
    (
        "credentials",
        (
            "INVALID_ACCESS_KEY_ID",
            "InvalidAccessKeyId",
            "SIGNATURE_DOES_NOT_MATCH",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
            "UNAUTHENTICATED",
        ),
    ),
    (
        "unreachable",
        ("NETWORK_CONNECTION", "Could not resolve host", "Couldn't connect", "UNAVAILABLE"),
    ),
    ("denied", ("ACCESS_DENIED", "AccessDenied", "HTTP status 403", "PERMISSION_DENIED")),
)


def storage_failure(exc: BaseException) -> str | None:
    """What an object-store error says failed: ``timeout``, ``credentials``, ``unreachable``
    (the endpoint), ``denied`` (this object or bucket), or None (something else)."""
    text = str(exc)
    for kind, needles in _STORAGE_FAILURES:
        if any(n in text for n in needles):
            return kind
    return None


def _check_size(n_bytes: int, path: str, max_bytes: int) -> None:
    if n_bytes == 0:
        raise ImageError(ErrorCode.EMPTY, f"file is empty: {path}")
    if n_bytes > max_bytes:
        raise ImageError(
            ErrorCode.TOO_LARGE, f"file is {n_bytes} bytes, over the {max_bytes}-byte bound: {path}"
        )


def decode_image(
    data: bytes, sizes: Sequence[Size], *, max_pixels: int = MAX_PIXELS
) -> list[np.ndarray]:
    """Decode image bytes once and return one RGB uint8 array per requested ``(h, w)`` size
    (the whole image: framing ``off``)."""
    return decode_framed(data, [(s, Framing()) for s in sizes], max_pixels=max_pixels).arrays


def decode_framed(
    data: bytes,
    requests: Sequence[tuple[Size, Framing]],
    *,
    max_pixels: int = MAX_PIXELS,
) -> FramedImage:
    """Decode image bytes once and cut one RGB uint8 array per ``(size, framing)``, with the
    main face found once for all aligned framings; ``no_face`` when a ``require`` framing finds
    none."""
    if not data:
        raise ImageError(ErrorCode.EMPTY, "no bytes to decode")
    pairs = [(as_hw(size), framing) for size, framing in requests]
    # Only when every framing cuts a face may the decoder drop resolution: a whole-image
    # resize must see the same pixels at every stage.
    draft = DRAFT_SIDE if pairs and all(f.aligned for _, f in pairs) else None
    rgb, full_size = _decode_rgb(data, max_pixels, draft)
    framed = frame_image(rgb, pairs, full_size=full_size)
    if framed.faces == 0 and any(f.mode is FaceMode.REQUIRE for _, f in pairs):
        raise ImageError(ErrorCode.NO_FACE, "no face found (framing 'require')")
    return framed


def load_image(path: str, size: Size, framing: Framing | None = None, **limits: int) -> np.ndarray:
    """Read and decode one file at one size, framed (default: the whole image): ``(h, w, 3)``
    RGB uint8."""
    max_bytes = limits.get("max_bytes", MAX_FILE_BYTES)
    max_pixels = limits.get("max_pixels", MAX_PIXELS)
    data = read_image_bytes(path, max_bytes=max_bytes)
    return decode_framed(data, [(size, framing or Framing())], max_pixels=max_pixels).arrays[0]


def _decode_rgb(
    data: bytes, max_pixels: int, draft: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """The upright RGB image, and its full-resolution (width, height) before any draft."""
    with warnings.catch_warnings():
        # Our own pixel bound below replaces Pillow's warning; its palette warning is noise.
        warnings.simplefilter("ignore")
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageError(ErrorCode.TOO_LARGE, str(exc)) from None
        except UnidentifiedImageError:
            raise ImageError(ErrorCode.UNSUPPORTED, "not an image format Pillow can read") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(ErrorCode.DECODE_ERROR, f"cannot parse image header: {exc}") from None
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageError(ErrorCode.DECODE_ERROR, f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageError(
                ErrorCode.TOO_LARGE,
                f"{width}x{height} = {width * height} pixels, over the {max_pixels}-pixel bound",
            )
        try:
            if draft is not None and img.format == "JPEG" and min(width, height) > 2 * draft:
                img.draft("RGB", (draft, draft))
            img.load()  # first frame only for animations
            # In place: without it Pillow copies every image that needs no turn.
            ImageOps.exif_transpose(img, in_place=True)
            full_size = _upright_size(img, width, height)
            return _to_rgb(img), full_size
        except Image.DecompressionBombError as exc:
            raise ImageError(ErrorCode.TOO_LARGE, str(exc)) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(ErrorCode.DECODE_ERROR, f"damaged image data: {exc}") from None


def _upright_size(img: Image.Image, width: int, height: int) -> tuple[int, int]:
    # The header's size, turned as EXIF turned the pixels (orientations 5-8 swap the sides).
    turned = (img.size[0] > img.size[1]) != (width > height) and width != height
    return (height, width) if turned else (width, height)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit (or 32-bit integer) grayscale: keep the top 8 bits rather than clipping.
        arr = np.asarray(img, dtype=np.int64)
        arr = np.clip(arr, 0, 65535) >> 8
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode in ("P", "PA"):
        # Through RGBA so palette transparency is resolved the way Pillow documents.
        img = img.convert("RGBA")
    # Alpha is dropped (not composited), as Keras' load_img(color_mode="rgb") does.
    return img.convert("RGB")
