"""Synthetic labeled "faces" for the demo and the tests: real image files, no real people.

Each image is a face-like ellipse on a noisy background. The positive class (``male``) has a
darker band over the lower face; the negative class (``female``) has hair falling beside the
face. Pose, size, skin tone, lighting and background vary, and ``label_noise`` flips a share
of labels, so models learn something real but not trivially.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES = ("female", "male")


def synthetic_face(
    label: int, rng: np.random.Generator, size: tuple[int, int] = (96, 96)
) -> Image.Image:
    """One RGB image of class ``label`` (0 female, 1 male), ``size`` = (height, width)."""
    h, w = size
    s = 4  # draw large, then downsample, for smooth edges
    H, W = h * s, w * s
    bg = rng.integers(40, 215, 3)
    noise = rng.normal(0, 18, (H // 8 + 1, W // 8 + 1, 3))
    base = np.clip(bg + np.kron(noise, np.ones((8, 8, 1)))[:H, :W], 0, 255).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    d = ImageDraw.Draw(img)
    cx = W / 2 + rng.uniform(-0.08, 0.08) * W
    cy = H / 2 + rng.uniform(-0.08, 0.08) * H
    fw, fh = W * rng.uniform(0.26, 0.36), H * rng.uniform(0.34, 0.44)
    skin = np.clip(np.array([205, 160, 130]) * rng.uniform(0.45, 1.15), 0, 255).astype(int)
    hair = tuple(int(v) for v in rng.integers(10, 120, 3))
    if label == 0:  # hair beside the face, down to the shoulders
        d.ellipse([cx - fw * 1.35, cy - fh * 1.15, cx + fw * 1.35, cy + fh * 1.25], fill=hair)
    else:  # short hair on top
        d.ellipse([cx - fw * 1.05, cy - fh * 1.12, cx + fw * 1.05, cy + fh * 0.2], fill=hair)
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=tuple(skin))
    if label == 1:  # beard shadow over the lower face
        shade = tuple(int(v) for v in (skin * rng.uniform(0.45, 0.7)))
        d.chord([cx - fw, cy - fh * 0.1, cx + fw, cy + fh], 0, 180, fill=shade)
    eye = tuple(int(v) for v in rng.integers(20, 70, 3))
    for sx in (-1, 1):
        ex, ey, r = cx + sx * fw * 0.4, cy - fh * 0.2, fw * 0.12
        d.ellipse([ex - r, ey - r * 0.6, ex + r, ey + r * 0.6], fill=eye)
    d.line(
        [cx - fw * 0.3, cy + fh * 0.45, cx + fw * 0.3, cy + fh * 0.45],
        fill=(120, 40, 40),
        width=s * 2,
    )
    light = rng.uniform(0.7, 1.25)
    arr = np.clip(np.asarray(img, dtype=np.float32) * light, 0, 255).astype(np.uint8)
    return (
        Image.fromarray(arr)
        .filter(ImageFilter.GaussianBlur(s * 0.6))
        .resize((w, h), Image.Resampling.BILINEAR)
    )


def write_synthetic_dataset(
    root: Path,
    n_per_class: int = 40,
    *,
    splits: Sequence[str] = ("train", "val"),
    size: tuple[int, int] = (96, 96),
    label_noise: float = 0.0,
    seed: int = 0,
    fmt: str = "jpg",
    with_csv: bool = True,
) -> dict[str, list[tuple[str, str]]]:
    """Write ``root/<split>/<class>/*.<fmt>`` (and ``root/<split>.csv`` with ``path,label``,
    paths relative to ``root``). Returns ``{split: [(relative path, label), ...]}``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[str, str]]] = {}
    for split in splits:
        rows = []
        for label, name in enumerate(CLASS_NAMES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                drawn = label if rng.random() >= label_noise else 1 - label
                img = synthetic_face(drawn, rng, size)
                rel = f"{split}/{name}/{name}_{i:05d}.{fmt}"
                img.save(root / rel, quality=92) if fmt == "jpg" else img.save(root / rel)
                rows.append((rel, name))
        if with_csv:
            with open(root / f"{split}.csv", "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["path", "label"])
                writer.writerows(rows)
        out[split] = rows
    return out
