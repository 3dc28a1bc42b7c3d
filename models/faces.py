"""Face detection: MediaPipe BlazeFace on ONNX Runtime, weights shipped in ``models/facedata``.

BlazeFace (Apache-2.0, see ``models/facedata/LICENSE``) comes in two sizes: the short-range
128 px model finds faces that fill a good part of the photo (news photos, portraits, crops) in
about 5 ms; the 256 px model also finds small faces (group photos) at about three times the
cost. :class:`FaceDetector` runs the short-range model first (again on the image shrunk
within a margin when a tight crop leaves it unsure) and the 256 px one only when those find
nothing. Both return 896 anchors of (score, box, six landmarks); this module
decodes them, merges overlapping boxes as MediaPipe does (score-weighted blending) and maps
everything back to the original image's pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.onnx_session import make_session
from models.probabilities import sigmoid

#: Landmark order of BlazeFace's six key points (the subject's right eye is on the image's left).
LANDMARKS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")
#: Candidates under this score are dropped before merging. MediaPipe's default, 0.5, lets
#: smooth out-of-focus backgrounds through as faces (up to 0.65, measured), while the faces of
#: news photos and portraits score 0.88 and more (5th percentile, FACECOM).
MIN_SCORE = 0.7
#: The models :class:`FaceDetector` tries in order, as (input side, minimum score, margin):
#: each runs only when the previous found nothing. A face filling the whole image (a tight
#: crop such as UTKFace's) is too big for the 128 px model's anchors: 16% of UTKFace val
#: crops score under 0.7 as they are, 0.25% once the image is shrunk to 2/3 of the input in a
#: black margin (margin 1.5); news photos keep their scores. The 256 px model comes last, for faces under
#: about a fifth of the photo's side (group photos, wide shots), which it finds at 0.7-0.95.
CASCADE: tuple[tuple[int, float, float], ...] = (
    (128, MIN_SCORE, 1.0),
    (128, MIN_SCORE, 1.5),
    (256, MIN_SCORE, 1.0),
)
#: Candidates overlapping more than this (intersection over union) are one face.
IOU_MERGE = 0.3
_MODELS = {128: "blazeface_front_128.onnx", 256: "blazeface_back_256.onnx"}


@dataclass(frozen=True)
class Face:
    """One face in an image, in that image's pixel coordinates."""

    #: x, y (top left), width, height.
    box: tuple[float, float, float, float]
    score: float
    #: (6, 2) x, y of :data:`LANDMARKS`.
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


def _anchors() -> np.ndarray:
    # BlazeFace's SSD anchors: a 16x16 grid with 2 anchors a cell, then 8x8 with 6, centres
    # in units of the input side; the outputs list the two grids in that order.
    out = []
    for cells, per_cell in ((16, 2), (8, 6)):
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(centres, centres)
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(out)


_ANCHORS = _anchors()


def decode_candidates(
    scores: np.ndarray, boxes: np.ndarray, side: int, min_score: float = MIN_SCORE
) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs -> ``(scores (k,), geometry (k, 16))`` of the anchors over ``min_score``.

    ``scores`` are logits ``(896,)``, ``boxes`` ``(896, 16)`` offsets in input pixels. Geometry
    rows are ``cx, cy, w, h`` then six ``x, y`` landmarks, in units of the input side.
    """
    p = sigmoid(scores)
    keep = np.flatnonzero(p >= min_score)
    geo = boxes[keep].astype(np.float64) / side
    anchor = _ANCHORS[keep].astype(np.float64)
    geo[:, 0:2] += anchor
    geo[:, 4:16] += np.tile(anchor, 6)
    return p[keep], geo


def merge_overlaps(
    scores: np.ndarray, geo: np.ndarray, iou: float = IOU_MERGE
) -> list[tuple[float, np.ndarray]]:
    """MediaPipe's weighted non-maximum suppression: each group of boxes overlapping the best
    remaining one is blended, weighted by score; the group keeps its best score."""
    order = np.argsort(-scores)
    scores, geo = scores[order], geo[order]
    left = np.ones(len(scores), dtype=bool)
    merged = []
    for i in range(len(scores)):
        if not left[i]:
            continue
        group = left & (_iou(geo[i], geo) >= iou)
        group[i] = True
        w = scores[group]
        merged.append((float(scores[i]), (geo[group] * w[:, None]).sum(axis=0) / w.sum()))
        left &= ~group
    return merged


def _iou(one: np.ndarray, many: np.ndarray) -> np.ndarray:
    lo = np.maximum(one[:2] - one[2:4] / 2, many[:, :2] - many[:, 2:4] / 2)
    hi = np.minimum(one[:2] + one[2:4] / 2, many[:, :2] + many[:, 2:4] / 2)
    inner = np.prod(np.clip(hi - lo, 0, None), axis=1)
    union = one[2] * one[3] + many[:, 2] * many[:, 3] - inner
    return inner / np.maximum(union, 1e-12)


class FaceDetector:
    """BlazeFace on ONNX Runtime, one thread a session (the scorer actors run side by side, one per CPU).

    ``cascade``: the models to try, as (input side, minimum score, margin), in order; the
    next runs only when the previous found no face. The image's long side fills
    ``1 / margin`` of the input's side, inset by half the rest (margin 1: all of it).
    """

    def __init__(self, cascade: tuple[tuple[int, float, float], ...] = CASCADE):
        self.cascade = cascade
        self.sessions_: dict[int, Any] = {}

    def _session(self, side: int) -> Any:
        if side not in self.sessions_:
            # Beside this file, not resources.files("models"): onnxruntime.quantization puts
            # its own top-level `models` on sys.path, which that name can resolve to.
            data = (Path(__file__).with_name("facedata") / _MODELS[side]).read_bytes()
            self.sessions_[side] = make_session(data, threads=1)
        return self.sessions_[side]

    def detect(self, image: Image.Image) -> list[Face]:
        """Every face in an RGB image, best score first (empty when there is none)."""
        for side, min_score, margin in self.cascade:
            faces = self._detect_at(image, side, min_score, margin)
            if faces:
                return faces
        return []

    def _detect_at(
        self, image: Image.Image, side: int, min_score: float, margin: float = 1.0
    ) -> list[Face]:
        width, height = image.size
        scale = side / margin / max(width, height)
        # Letterbox: the photo shrunk to fit the square input (less the margin), the rest
        # black. reducing_gap shrinks big photos by whole factors first (fast), then filters.
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        small = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
        off = round((side - side / margin) / 2)
        square = np.zeros((1, side, side, 3), dtype=np.float32)
        square[0, off : off + h, off : off + w] = np.asarray(small, dtype=np.float32) / 127.5 - 1.0
        session = self._session(side)
        s16, s8, b16, b8 = session.run(None, {session.get_inputs()[0].name: square})
        scores = np.concatenate([s16[0, :, 0], s8[0, :, 0]])
        boxes = np.concatenate([b16[0], b8[0]])
        cand_scores, geo = decode_candidates(scores, boxes, side, min_score)
        faces = []
        for score, g in merge_overlaps(cand_scores, geo):
            g = g * side  # input-side units -> input pixels -> original pixels
            g[[0, 1, *range(4, 16)]] -= off
            g = g / scale
            cx, cy, bw, bh = g[:4]
            faces.append(Face((cx - bw / 2, cy - bh / 2, bw, bh), score, g[4:].reshape(6, 2)))
        return faces


_local = threading.local()


def default_detector() -> FaceDetector:
    """This thread's detector, created once: sessions load on first use and are then reused by
    every image a worker process decodes."""
    detector = getattr(_local, "detector", None)
    if detector is None:
        detector = _local.detector = FaceDetector()
    return detector


def main_face(faces: list[Face]) -> Face | None:
    """The face a photo is about: the largest, weighted by its score (area x score)."""
    return max(faces, key=lambda f: f.area * f.score, default=None)
