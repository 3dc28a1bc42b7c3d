"""Scoring fixtures: one local Ray for the session, and a folder of real image files (good ones
in many formats and modes, bad ones of every kind) with a manifest listing them."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with two CPUs, shared by every scoring test (started once)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()


@dataclass(frozen=True)
class Corpus:
    """A manifest and what each of its rows must come out as."""

    folder: Path  # the --root: every good image is inside
    manifest: Path
    expected: list[tuple[str, str | None]]  # per row: (status, error_code)
    good_paths: dict[int, str]  # row -> absolute path of a decodable image


def _rng_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Smooth content (not white noise) so JPEG round trips and resizing behave like photos.
    base = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC))


def write_corpus(folder: Path, seed: int = 0) -> Corpus:
    """Real files of many kinds and a CSV manifest (relative, absolute and file:// paths,
    a label column, a kept column, a quoted comma, CRLF line ends)."""
    rng = np.random.default_rng(seed)
    img = folder / "images"
    img.mkdir(parents=True)
    rows: list[tuple[str, str, str | None, str | None]] = []  # (cell, status, code, abs path)

    def good(name: str, cell: str | None = None) -> None:
        rows.append((cell or f"images/{name}", "ok", None, str(img / name)))

    def bad(cell: str, code: str) -> None:
        rows.append((cell, "error", code, None))

    Image.fromarray(_rng_image(rng, 120, 100)).save(img / "rgb.jpg", quality=90)
    good("rgb.jpg")
    Image.fromarray(_rng_image(rng, 64, 64)).save(img / "rgb.png")
    good("rgb.png", cell=str(img / "rgb.png"))  # absolute
    Image.fromarray(_rng_image(rng, 50, 70)[:, :, 0], "L").save(img / "gray.png")
    good("gray.png")
    rgba = np.dstack([_rng_image(rng, 40, 40), rng.integers(0, 255, (40, 40), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(img / "rgba.png")
    good("rgba.png", cell=(img / "rgba.png").as_uri())  # file:// URI
    pal = Image.fromarray(_rng_image(rng, 30, 36)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(img / "palette.png")
    good("palette.png")
    deep = (rng.integers(0, 65535, (34, 34))).astype(np.uint16)
    Image.fromarray(deep).save(img / "deep16.png")
    good("deep16.png")
    Image.fromarray(_rng_image(rng, 48, 48)).convert("CMYK").save(img / "cmyk.jpg")
    good("cmyk.jpg")
    Image.fromarray(_rng_image(rng, 44, 52)).save(img / "photo.webp")
    good("photo.webp")
    Image.fromarray(_rng_image(rng, 33, 29)).save(img / "bitmap.bmp")
    good("bitmap.bmp")
    Image.fromarray(_rng_image(rng, 40, 60)).save(img / "ünï cödé, spaced.jpg")
    good("ünï cödé, spaced.jpg")  # the comma needs quoting in the CSV
    good("rgb.jpg")  # a duplicate row is scored as its own row

    bad("images/missing.jpg", "not_found")
    (img / "empty.jpg").write_bytes(b"")
    bad("images/empty.jpg", "empty")
    buf = io.BytesIO()
    Image.fromarray(_rng_image(rng, 64, 64)).save(buf, format="JPEG")
    (img / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    bad("images/truncated.jpg", "decode_error")
    (img / "random.jpg").write_bytes(rng.bytes(2048))
    bad("images/random.jpg", "unsupported")
    (img / "folder.jpg").mkdir()
    bad("images/folder.jpg", "not_a_file")
    bad("", "bad_path")
    Image.fromarray(_rng_image(rng, 20, 20)).save(folder / "outside.jpg")
    bad("images/../outside.jpg", "outside_root")

    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["path", "label", "note", "unused"])
        for i, (cell, *_rest) in enumerate(rows):
            w.writerow([cell, "male" if i % 2 else "female", f"note {i}", "x"])
    expected = [(status, code) for _, status, code, _ in rows]
    good_paths = {i: p for i, (_, _, _, p) in enumerate(rows) if p is not None}
    return Corpus(folder=img, manifest=manifest, expected=expected, good_paths=good_paths)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def model_paths(onnx_models: dict[str, Path]) -> list[str]:
    """The shared converted models (48 and 32 px), as paths."""
    return [os.fspath(p) for p in onnx_models.values()]
