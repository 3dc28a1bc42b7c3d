"""Photos with real faces for tests: scikit-image's public-domain astronaut and camera faces,
scaled, turned and pasted onto smooth backgrounds; coffee for a photo without a face."""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Square crops around each bundled face (left, top, right, bottom), with some hair and chin.
FACE_CROPS = {"astronaut": (150, 40, 310, 200), "camera": (150, 90, 300, 240)}


def face(source: str = "astronaut") -> Image.Image:
    """The face crop of a bundled photo, RGB."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, source)()).convert("RGB").crop(FACE_CROPS[source])


def background(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth random colours, like an out-of-focus scene."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 215, (height // 32 + 2, width // 32 + 2, 3)).astype(np.uint8)
    return Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)


def photo(
    width: int = 320,
    height: int = 240,
    *,
    source: str = "astronaut",
    side: int = 110,
    at: tuple[int, int] | None = None,
    angle: float = 0.0,
    seed: int = 0,
) -> Image.Image:
    """A ``width`` x ``height`` photo with one face ``side`` px wide pasted with its top left at
    ``at`` (default: centred), turned ``angle`` degrees counter-clockwise."""
    canvas = background(width, height, seed)
    f = face(source).resize((side, side), Image.Resampling.BICUBIC)
    if angle:
        f = f.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    x, y = at if at is not None else ((width - side) // 2, (height - side) // 2)
    canvas.paste(f, (x, y))
    return canvas


def no_face(width: int = 320, height: int = 240) -> Image.Image:
    """Coffee: a real photo without a face."""
    import skimage.data

    return Image.fromarray(skimage.data.coffee()).resize((width, height))
