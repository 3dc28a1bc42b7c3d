"""Face framing on hard inputs, through the one decoder (``decode_framed`` / ``load_image``).

Every photo is written by the test from scikit-image's bundled public-domain pictures: the
astronaut (a face), the cameraman (a face) and a coffee cup (no face), scaled, turned, padded
and pasted. Expected face boxes come from BlazeFace's box on the plain astronaut, moved the way
the test moved the face.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from photos import face
from PIL import Image, ImageOps

skdata = pytest.importorskip("skimage.data", reason="scikit-image is in the dev extra")

from models.errors import DataError, UsageError  # noqa: E402
from models.faces import (  # noqa: E402
    CASCADE,
    FaceDetector,
    decode_candidates,
    main_face,
    merge_overlaps,
)
from models.framing import (  # noqa: E402
    UTKFACE_TEMPLATE,
    FaceMode,
    Framing,
    parse_face_mode,
    similarity_transform,
)
from models.imageio import (  # noqa: E402
    DRAFT_SIDE,
    MAX_PIXELS,
    ErrorCode,
    ImageError,
    _decode_rgb,
    decode_framed,
    decode_image,
    load_image,
)

OFF, ALIGN, REQUIRE = Framing(), Framing(FaceMode.ALIGN), Framing(FaceMode.REQUIRE)
EXIF_ORIENTATION = 0x0112


def _encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        kw.setdefault("quality", 92)
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def _coffee() -> Image.Image:
    return Image.fromarray(skdata.coffee())


@pytest.fixture(scope="module")
def astro_box() -> np.ndarray:
    """BlazeFace's box (x, y, w, h) on the plain 512x512 astronaut."""
    framed = decode_framed(_encode(_astronaut(), "PNG"), [(64, ALIGN)])
    assert framed.faces == 1 and framed.score > 0.8
    return np.asarray(framed.box)


def _assert_box_near(box, expected, tol: float = 0.15) -> None:
    """Centres within ``tol`` of the expected side, sides within ``1 +- 2 tol``."""
    box, expected = np.asarray(box, dtype=float), np.asarray(expected, dtype=float)
    side = expected[2]
    centre = box[:2] + box[2:] / 2
    want = expected[:2] + expected[2:] / 2
    assert np.all(np.abs(centre - want) < tol * side), (box.round(1), expected.round(1))
    assert abs(box[2] / side - 1) < 2 * tol, (box.round(1), expected.round(1))


#: Finds the eyes again in aligned crops: a crop cut at the chin or the border scores lower
#: than a photo, and here only the landmarks matter, not whether it is a face.
_MEASURE = FaceDetector(((128, 0.5, 1.0), (256, 0.5, 1.0)))


def _eyes(crop: np.ndarray, side: int = 256) -> np.ndarray:
    """The main face's eyes (right, left) in a crop, as fractions of its width and height,
    found by running the detector again on the crop enlarged to ``side``."""
    h, w = crop.shape[:2]
    big = Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC)
    face = main_face(_MEASURE.detect(big))
    assert face is not None, "no face in the aligned crop"
    return face.landmarks[:2] / side


def _angle(eyes: np.ndarray) -> float:
    (x0, y0), (x1, y1) = eyes
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


TEMPLATE_EYES = np.asarray(UTKFACE_TEMPLATE[:2])


# --- tiny images and no face at all --------------------------------------------------------


@pytest.mark.parametrize("side", [1, 8])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_tiny_image_align_is_whole_image_and_require_is_no_face(side: int, fmt: str):
    rng = np.random.default_rng(side)
    data = _encode(Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)), fmt)
    framed = decode_framed(data, [(32, ALIGN)])
    assert framed.faces == 0 and framed.box is None and framed.score is None
    np.testing.assert_array_equal(framed.arrays[0], decode_image(data, [32])[0])
    with pytest.raises(ImageError, match="no_face: no face found") as info:
        decode_framed(data, [(32, REQUIRE)])
    assert info.value.code is ErrorCode.NO_FACE


def test_no_face_align_equals_off_and_require_is_an_error(tmp_path):
    path = tmp_path / "coffee.jpg"
    path.write_bytes(_encode(_coffee()))
    framed = decode_framed(path.read_bytes(), [(64, ALIGN), ((48, 80), ALIGN)])
    assert framed.faces == 0 and framed.box is None
    for arr, size in zip(framed.arrays, [64, (48, 80)], strict=True):
        np.testing.assert_array_equal(arr, load_image(str(path), size))
    with pytest.raises(ImageError, match=r"no_face: .*framing 'require'") as info:
        load_image(str(path), 64, REQUIRE)
    assert info.value.code is ErrorCode.NO_FACE


# --- framing off: the old pixels -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(400, 600), (2100, 2200)])
def test_framing_off_is_exactly_the_whole_image_resized(shape):
    # 2100 px is past the draft threshold: off must not drop resolution, even beside an aligned
    # framing of the same decode.
    h, w = shape
    data = _encode(_coffee().resize((w, h), Image.Resampling.BILINEAR))
    whole = Image.open(io.BytesIO(data)).convert("RGB")
    want = np.asarray(whole.resize((64, 48), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(data, [(48, 64)])[0], want)
    framed = decode_framed(data, [((48, 64), OFF), ((48, 64), ALIGN)])
    np.testing.assert_array_equal(framed.arrays[0], want)
    off_only = decode_framed(data, [((48, 64), OFF)])
    assert off_only.faces is None and off_only.box is None and off_only.score is None


# --- faces that are hard to find -----------------------------------------------------------


def test_sixty_megapixel_photo_decodes_at_draft_scale_and_reports_full_size_box(astro_box):
    w, h, face_side, at = 9000, 6700, 5000, (3000, 1000)
    canvas = _coffee().resize((w, h), Image.Resampling.NEAREST)
    canvas.paste(_astronaut().resize((face_side, face_side), Image.Resampling.BILINEAR), at)
    data = _encode(canvas, quality=80)
    del canvas
    img, full = _decode_rgb(data, MAX_PIXELS, DRAFT_SIDE)
    assert full == (w, h) and img.size == (w // 4, h // 4)  # decoded at a quarter scale
    del img
    framed = decode_framed(data, [(64, ALIGN), (128, REQUIRE)])
    assert framed.faces == 1 and [a.shape for a in framed.arrays] == [(64, 64, 3), (128, 128, 3)]
    k = face_side / 512
    expected = np.r_[astro_box[:2] * k + at, astro_box[2:] * k]
    _assert_box_near(framed.box, expected)


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grayscale_and_cmyk_faces_are_found(mode: str, astro_box):
    data = _encode(_astronaut().convert(mode))
    framed = decode_framed(data, [(64, ALIGN)])
    assert framed.faces == 1
    _assert_box_near(framed.box, astro_box, tol=0.1)
    if mode == "L":
        crop = framed.arrays[0].astype(int)
        assert np.abs(crop[..., 0] - crop[..., 1]).max() <= 1


def test_grayscale_photo_cameraman_face_is_found():
    # A photo taken in grayscale (8-bit PNG, mode L): the cameraman's face, behind his camera's
    # eyepiece, is at about x 180-265, y 120-210 of the 512x512 picture.
    framed = decode_framed(_encode(Image.fromarray(skdata.camera()), "PNG"), [(64, ALIGN)])
    assert framed.faces == 1
    x, y, w, h = framed.box
    assert 180 < x + w / 2 < 265 and 120 < y + h / 2 < 210 and 60 < w < 120


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("upright_size", [(500, 700), (2200, 3000)])
def test_exif_rotated_photo_box_is_in_upright_pixels(orientation: int, upright_size, astro_box):
    # The face sits low and right in a portrait: a box in the stored (sideways) pixels, or
    # sides not swapped back, would land elsewhere. The larger photo is decoded at draft scale.
    w, h = upright_size
    face_side = w * 3 // 5
    at = (w - face_side - w // 20, h - face_side - h // 20)
    upright = _coffee().resize((w, h))
    upright.paste(_astronaut().resize((face_side, face_side)), at)
    sideways = upright.transpose(
        Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
    )
    exif = sideways.getexif()
    exif[EXIF_ORIENTATION] = orientation
    data = _encode(sideways, exif=exif)
    framed = decode_framed(data, [(64, ALIGN)])
    k = face_side / 512
    _assert_box_near(framed.box, np.r_[astro_box[:2] * k + at, astro_box[2:] * k])
    eyes = _eyes(framed.arrays[0])
    assert abs(_angle(eyes) - _angle(TEMPLATE_EYES)) < 15  # upright, not lying on its side


def _group_photo(big_at: tuple[int, int], small: int, big: int, cell: int = 100) -> Image.Image:
    """Thirty astronaut heads (mirrored in turn) on a 6x5 grid; the one in ``big_at`` (row,
    column) is drawn at ``big`` px, the others at ``small``."""
    heads = [face("astronaut"), ImageOps.mirror(face("astronaut"))]
    canvas = Image.new("RGB", (6 * cell, 5 * cell), (90, 110, 130))
    for r in range(5):
        for c in range(6):
            side = big if (r, c) == big_at else small
            off = (cell - side) // 2
            canvas.paste(heads[(r + c) % 2].resize((side, side)), (c * cell + off, r * cell + off))
    return canvas


def test_group_photo_counts_the_faces_and_frames_the_largest():
    # Thirty small faces: the short-range model finds none, the 256 px one finds them.
    framed = decode_framed(_encode(_group_photo((2, 3), 85, 100), "PNG"), [(64, ALIGN)])
    assert 25 <= framed.faces <= 30
    x, y, w, h = framed.box
    assert 300 < x + w / 2 < 400 and 200 < y + h / 2 < 300  # on the bigger face, cell (2, 3)


def test_group_photo_with_one_prominent_face_counts_what_the_first_model_saw():
    # The cascade stops at the first model that finds a face: when the short-range model
    # sees the one large face, the small ones around it are not counted.
    canvas = _group_photo((0, 0), 85, 100)
    canvas.paste(face("astronaut").resize((200, 200)), (0, 0))
    framed = decode_framed(_encode(canvas, "PNG"), [(64, ALIGN)])
    assert framed.faces == 1
    x, y, w, h = framed.box
    assert x + w / 2 < 200 and y + h / 2 < 200
    assert len(FaceDetector(((256, 0.7, 1.0),)).detect(canvas)) >= 20


def test_tight_crop_is_found_inside_a_margin(astro_box):
    # A crop the face fills (as UTKFace's are) is too big for the short-range model's anchors;
    # the cascade tries it again shrunk within a margin, and maps the box back to the crop.
    left, top = 185, 90
    tight = _astronaut().crop((left, top, 265, 170))
    assert FaceDetector(CASCADE[:1]).detect(tight) == []
    framed = decode_framed(_encode(tight, "PNG"), [(64, REQUIRE)])
    assert framed.faces == 1 and framed.score >= CASCADE[1][1]
    _assert_box_near(framed.box, np.r_[astro_box[:2] - [left, top], astro_box[2:]])


def test_margin_maps_boxes_and_landmarks_back_to_the_image():
    crop = _astronaut().crop((170, 75, 280, 185))
    plain, inset = (main_face(FaceDetector(((128, 0.5, m),)).detect(crop)) for m in (1.0, 1.5))
    np.testing.assert_allclose(inset.box, plain.box, atol=0.1 * plain.box[2])
    np.testing.assert_allclose(inset.landmarks[:4], plain.landmarks[:4], atol=0.1 * plain.box[2])


# --- alignment -----------------------------------------------------------------------------


def test_face_cut_by_the_border_is_padded_black_not_shifted(astro_box):
    whole = decode_framed(_encode(_astronaut(), "PNG"), [(128, ALIGN)]).arrays[0]
    cut = int(astro_box[0] + 0.15 * astro_box[2])  # the left 15% of the face box is gone
    framed = decode_framed(_encode(_astronaut().crop((cut, 0, 512, 512)), "PNG"), [(128, ALIGN)])
    assert framed.faces == 1 and framed.box[0] < 0  # the box runs past the border
    crop = framed.arrays[0]
    black = (crop == 0).all(axis=2)[:80]  # rows down to the mouth (the suit below is dark)
    assert black[:, :10].mean() > 0.5 and not black[:, -10:].any()  # padded on the cut side
    assert (whole == 0).all(axis=2)[:80, :10].mean() < 0.1  # the uncut photo fills that side
    # The face keeps its place: the eyes' midpoint and spacing are the template's. Landmarks
    # next to a border are less sure, so the eye line may turn (about 15 degrees here).
    eyes = _eyes(crop)
    np.testing.assert_allclose(eyes.mean(axis=0), TEMPLATE_EYES.mean(axis=0), atol=0.05)
    spacing = np.linalg.norm(eyes[1] - eyes[0]) / np.linalg.norm(
        TEMPLATE_EYES[1] - TEMPLATE_EYES[0]
    )
    assert 0.85 < spacing < 1.15
    assert abs(_angle(eyes) - _angle(TEMPLATE_EYES)) < 20


def test_face_turned_thirty_degrees_is_levelled():
    upright = decode_framed(_encode(_astronaut()), [(128, ALIGN)]).arrays[0]
    turned = _astronaut().rotate(30, resample=Image.Resampling.BICUBIC, expand=True)
    face = main_face(FaceDetector().detect(turned))
    assert face is not None and _angle(face.landmarks[:2]) < -15  # tilted in the photo
    framed = decode_framed(_encode(turned), [(128, ALIGN)])
    assert framed.faces == 1
    eyes = _eyes(framed.arrays[0])
    # Level as the upright photo's crop is: the four-point fit (eyes, nose, mouth) leaves this
    # smiling face's eye line about 5 degrees off the template's, turned or not.
    assert abs(_angle(eyes) - _angle(_eyes(upright))) < 3
    assert abs(_angle(eyes) - _angle(TEMPLATE_EYES)) < 8
    # BlazeFace's landmarks on a tilted face are less sure: the crop may sit 6% to the side.
    np.testing.assert_allclose(eyes, _eyes(upright), atol=0.08)


# --- pure pieces ---------------------------------------------------------------------------


def test_similarity_transform_recovers_rotation_scale_and_shift():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (6, 2))
    a, s, t = math.radians(25), 1.7, np.array([12.0, -7.0])
    rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = similarity_transform(src, src @ rot.T + t)
    np.testing.assert_allclose(m, np.hstack([rot, t[:, None]]), atol=1e-9)


def test_similarity_transform_never_mirrors():
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.5]])
    m = similarity_transform(src, src * [-1.0, 1.0])  # a mirror image
    assert np.linalg.det(m[:, :2]) > 0


def test_framing_round_trips_through_json():
    template = ((0.3, 0.3), (0.7, 0.31), (0.5, 0.5), (0.5, 0.7))
    framing = Framing(FaceMode.REQUIRE, template)
    back = Framing.from_dict(json.loads(json.dumps(framing.to_dict())))
    assert back == framing and back.template == template
    assert Framing.from_dict(None) == OFF
    assert Framing.from_dict({"mode": "align"}) == ALIGN  # the default template
    assert framing.with_mode("align").template == template
    assert framing.pixels_key == framing.with_mode("align").pixels_key != ALIGN.pixels_key
    assert OFF.pixels_key == "full" and not OFF.aligned


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("align", r"m\.onnx: framing must be a mapping with a 'mode', got 'align'"),
        ({"template": []}, r"m\.onnx: framing must be a mapping with a 'mode'"),
        ({"mode": "sideways"}, r"m\.onnx: bad framing .*'sideways'"),
        ({"mode": "align", "template": [[0.3, 0.3]]}, r"a face template is 4 \(x, y\) pairs"),
        ({"mode": "align", "template": 5}, r"m\.onnx: bad framing"),
        ({"mode": "align", "template": [[0.5, 0.5]] * 4}, "right eye left of the left eye"),
        (
            {"mode": "align", "template": [[0.7, 0.3], [0.3, 0.3], [0.5, 0.5], [0.5, 0.7]]},
            "right eye left of the left eye",
        ),
        (
            {"mode": "align", "template": [[0.3, 0.3], [0.7, 0.3], [0.5, 0.5], [0.5, 1e9]]},
            r"fractions of the crop in \[0, 1\]",
        ),
        (
            {"mode": "align", "template": [[0.3, 0.3], [0.7, 0.3], [0.5, 0.5], [0.5, "nan"]]},
            r"m\.onnx: bad framing",
        ),
    ],
)
def test_framing_from_bad_dict_says_what_is_wrong(data, match: str):
    with pytest.raises(DataError, match=match):
        Framing.from_dict(data, source="m.onnx")


def test_parse_face_mode_lists_the_choices():
    assert parse_face_mode("require") is FaceMode.REQUIRE
    assert parse_face_mode(FaceMode.OFF) is FaceMode.OFF
    with pytest.raises(UsageError, match=r"unknown face framing 'faces': choose one of off, "):
        parse_face_mode("faces")
    with pytest.raises(UsageError, match="choose one of off, align, require"):
        Framing("Align")


def test_merge_overlaps_blends_overlapping_candidates_by_score():
    # cx, cy, w, h, then six landmarks (all at the centre here)
    def geo(cx, cy, w):
        return np.r_[cx, cy, w, w, np.tile([cx, cy], 6)]

    scores = np.array([0.6, 0.9, 0.8])
    cands = np.stack([geo(0.52, 0.5, 0.2), geo(0.5, 0.5, 0.2), geo(0.1, 0.1, 0.1)])
    merged = merge_overlaps(scores, cands)
    assert [s for s, _ in merged] == [0.9, 0.8]  # best first; the 0.6 joined the 0.9
    np.testing.assert_allclose(merged[0][1][:2], [(0.5 * 0.9 + 0.52 * 0.6) / 1.5, 0.5])
    np.testing.assert_allclose(merged[1][1], cands[2])


def test_decode_candidates_drops_low_scores_and_adds_anchor_centres():
    logits = np.full(896, -10.0)
    logits[[0, 600]] = [3.0, 0.0]  # p = 0.95 and 0.5
    boxes = np.zeros((896, 16))
    boxes[0, :4] = [12.8, 0.0, 25.6, 25.6]  # 0.1 of a 128 px side to the right, 0.2 wide
    scores, geo = decode_candidates(logits, boxes, 128, min_score=0.6)
    assert len(scores) == 1 and scores[0] == pytest.approx(1 / (1 + math.exp(-3)))
    # anchor 0: the first cell of the 16x16 grid, centre (1/32, 1/32)
    np.testing.assert_allclose(geo[0, :4], [1 / 32 + 0.1, 1 / 32, 0.2, 0.2])
    np.testing.assert_allclose(geo[0, 4:6], [1 / 32, 1 / 32])


def test_detector_loads_its_weights_when_onnxruntime_quantization_came_first(tmp_path):
    """onnxruntime.quantization puts onnxruntime/transformers on sys.path, whose `models`
    folder then answers to the name `models`: the detector must still find its weights."""
    import subprocess
    import sys

    script = (
        "import onnxruntime.quantization.shape_inference\n"
        "import numpy as np\n"
        "from PIL import Image\n"
        "from skimage import data\n"
        "from models.faces import FaceDetector\n"
        "faces = FaceDetector().detect(Image.fromarray(data.astronaut()))\n"
        "print(len(faces))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) >= 1
