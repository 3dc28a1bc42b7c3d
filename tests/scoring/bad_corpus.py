"""Every bad or unusual input issue 8 lists, written by the tests (no binary fixtures), with
the outcome each must get: ``None`` (scored) or a stable error code."""

from __future__ import annotations

import csv
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE = (255, 0, 0), (0, 0, 255)
ORIENTATION = 0x0112  # the EXIF tag


@dataclass(frozen=True)
class Case:
    """One manifest row: its path cell, its expected error code (None: scored) and, for a
    scored row, the pixels the loader must give at the case's native size."""

    name: str
    cell: str
    code: str | None
    pixels: np.ndarray | None = None  # (h, w, 3) expected at size pixels.shape[:2]
    atol: int = 0  # lossy formats (JPEG) differ from the source by a few levels


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Photo-like content (smooth, so JPEG round trips stay close)."""
    y, x = np.mgrid[0:h, 0:w]
    off = seed * 37
    return np.stack([(x * 5 + off) % 256, (y * 7 + off) % 256, (x + y) * 3 % 256], -1).astype(
        np.uint8
    )


def half_red(h: int = 20, w: int = 40) -> np.ndarray:
    """Left half red, right half blue: where the red ends up shows the rotation applied."""
    arr = np.empty((h, w, 3), np.uint8)
    arr[:, : w // 2] = RED
    arr[:, w // 2 :] = BLUE
    return arr


def exif_jpeg(orientation: int) -> bytes:
    img = Image.fromarray(half_red())
    exif = img.getexif()
    exif[ORIENTATION] = orientation
    return encode(img, "JPEG", quality=95, subsampling=0, exif=exif)


#: orientation -> the displayed image (what the loader must return).
ROTATED = {
    3: np.rot90(half_red(), 2),  # 180: red on the right
    6: np.rot90(half_red(), -1),  # 90 clockwise: red on top
    8: np.rot90(half_red(), 1),  # 90 counter-clockwise: red at the bottom
}


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(encode(Image.fromarray(smooth(16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header (IHDR) claims ``width`` x ``height`` 8-bit gray pixels, with the
    first rows of zeros as data: a few hundred bytes that promise ``width * height``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    rows = zlib.compress(bytes(4 * (width + 1)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def animated_gif() -> bytes:
    frames = [Image.new("P", (24, 24), i) for i in (10, 200)]
    for f in frames:
        f.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def palette_with_transparency() -> tuple[bytes, np.ndarray]:
    idx = (np.arange(20 * 30).reshape(20, 30) % 4).astype(np.uint8)
    img = Image.fromarray(idx, "P")
    colours = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (90, 90, 90)]
    img.putpalette([v for c in colours for v in c] + [0] * (256 - 4) * 3)
    data = encode(img, "PNG", transparency=0)  # index 0 fully transparent
    return data, np.array(colours, np.uint8)[idx]  # alpha dropped, as Keras does


def write_bad_corpus(folder: Path) -> tuple[Path, list[Case]]:
    """Write every case under ``folder/root`` (plus a few files outside it); return the root
    and one Case per manifest row, in manifest order. Cells are relative to ``folder``."""
    root = folder / "root"
    img = root / "img"
    img.mkdir(parents=True)
    cases: list[Case] = []

    def add(name: str, data: bytes | None, code: str | None, pixels=None, atol=0) -> None:
        if data is not None:
            (img / name).write_bytes(data)
        cases.append(Case(name, f"root/img/{name}", code, pixels, atol))

    base = smooth(30, 40)
    add("missing.jpg", None, "not_found")
    add("zero.jpg", b"", "empty")
    jpeg = encode(Image.fromarray(smooth(64, 64)), "JPEG", quality=95)
    add("truncated.jpg", jpeg[: len(jpeg) // 2], "decode_error")
    add("random.jpg", np.random.default_rng(8).bytes(3000), "unsupported")
    add(
        "page.jpg",
        b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n",
        "unsupported",
    )
    deep = (np.arange(30 * 40).reshape(30, 40) * 53 % 65536).astype(np.uint16)
    add(
        "deep16.png",
        encode(Image.fromarray(deep), "PNG"),
        None,
        np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, -1),
    )
    add(
        "cmyk.jpg",
        encode(Image.fromarray(base).convert("CMYK"), "JPEG", quality=95),
        None,
        base,
        12,
    )
    gray = base[..., 0]
    add(
        "gray.png",
        encode(Image.fromarray(gray, "L"), "PNG"),
        None,
        np.repeat(gray[..., None], 3, -1),
    )
    alpha = (np.arange(30 * 40).reshape(30, 40) % 256).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([base, alpha]), "RGBA")
    add("rgba.png", encode(rgba, "PNG"), None, base)  # alpha dropped, not composited
    pal_bytes, pal_pixels = palette_with_transparency()
    add("palette.png", pal_bytes, None, pal_pixels)
    add("rotated.jpg", exif_jpeg(6), None, ROTATED[6], 12)
    add(
        "one.png",
        encode(Image.new("RGB", (1, 1), (12, 34, 56)), "PNG"),
        None,
        np.full((7, 5, 3), (12, 34, 56), np.uint8),
    )
    add("bomb.png", png_claiming(30000, 30000), "too_large")
    add("bomb.jpg", jpeg_claiming(30000, 30000), "too_large")
    add("anim.gif", animated_gif(), None, np.full((24, 24, 3), (10, 245, 0), np.uint8))
    add("photo.webp", encode(Image.fromarray(base), "WEBP", lossless=True), None, base)
    add("bitmap.bmp", encode(Image.fromarray(base), "BMP"), None, base)
    add("scan.tiff", encode(Image.fromarray(base), "TIFF", compression="tiff_lzw"), None, base)
    add("ünï cödé, with spaces.png", encode(Image.fromarray(base), "PNG"), None, base)
    (img / "folder.jpg").mkdir()
    add("folder.jpg", None, "not_a_file")
    # Root reads every file, so only an unprivileged user sees this row refused.
    add(
        "secret.png",
        encode(Image.fromarray(base), "PNG"),
        "permission_denied" if os.geteuid() else None,
        base,
    )
    (img / "secret.png").chmod(0)
    cases.append(Case("duplicate", "root/img/photo.webp", None, base))
    # Escapes from --root: a '..' path, an absolute path and a symlink, each to a real image.
    (folder / "outside.png").write_bytes(encode(Image.fromarray(base), "PNG"))
    cases.append(Case("dotdot", "root/img/../../outside.png", "outside_root"))
    cases.append(Case("absolute", str(folder / "outside.png"), "outside_root"))
    os.symlink(folder / "outside.png", img / "escape.png")
    cases.append(Case("symlink out", "root/img/escape.png", "outside_root"))
    os.symlink(img / "photo.webp", img / "inside.webp")
    cases.append(Case("symlink in", "root/img/inside.webp", None, base))
    cases.append(Case("empty cell", "", "bad_path"))
    cases.append(Case("nul byte", "root/img/a\x00b.png", "bad_path"))
    return root, cases


def write_manifest(path: Path, cases: list[Case]) -> Path:
    """A CSV manifest of the cases: UTF-8 with a BOM, CRLF, quoted fields, a blank line."""
    with open(path, "w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["path", "case"])
        for i, case in enumerate(cases):
            w.writerow([case.cell, case.name])
            if i == 3:
                fh.write("\r\n")
    return path
