"""Face detection and alignment measured on the real data (``models.faces``, ``models.framing``).

    python benchmarks/bench_faces.py [--data ../shared/data] [--json FILE] [--limit N] \\
        [all | detect | stability | template | framing]

- ``detect``: share of images with at least one face, and ms per image with the decode left
  out (detector only, on decoded RGB images) and put in (the aligned framings' decode: JPEG
  draft for big photos, EXIF, RGB), on FACECOM train's 250x250 news photos, its portraits
  (every other size) and UTKFace val's 200x200 crops; for the cascade as shipped
  (``models.faces.CASCADE``), each of its steps alone, and each model at MediaPipe's
  default threshold, 0.5. Also: images with more than one face, and how often a later step
  of the cascade found the face the first step found none in.
- ``stability``: each image's eyes, found again after a small change, against the eyes the
  cascade found on the original, as % of the original eye distance (median and 95th
  percentile): shifted (3, 2) px, scaled 0.9 and 1.1, re-encoded as JPEG quality 60, and put
  in the middle of a black canvas three times its size (the face small in the photo, as in
  group photos; also with the cascade's last step, the 256 px model, alone).
- ``template``: the landmark template re-derived (mean eyes, nose and mouth, as fractions of
  the side, over a seeded sample of UTKFace train crops, half of each class) next to the
  shipped ``UTKFACE_TEMPLATE``.
- ``framing``: ms per image of ``decode_framed`` at 64 px with framing align against off on
  FACECOM's news photos (rounds interleaved, median), and the ratio.

Times are CPU time of this one thread (``time.process_time``; the detector's ONNX Runtime
sessions run on one thread): on a shared machine wall time measures the neighbours. ``--json``
writes every figure printed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models.faces import CASCADE, FaceDetector, main_face  # noqa: E402
from models.framing import UTKFACE_TEMPLATE, FaceMode, Framing  # noqa: E402
from models.imageio import DRAFT_SIDE, MAX_PIXELS, _decode_rgb, decode_framed  # noqa: E402

SHIPPED = "cascade (shipped)"


def _step_name(side: int, score: float, margin: float = 1.0) -> str:
    inset = f" margin {margin:g}" if margin != 1.0 else ""
    return f"{side}{inset} @{score:g}"


#: The cascade as shipped, each of its steps alone (the first is the baseline of the ``x 1st``
#: ratio), and each model at MediaPipe's default threshold, 0.5.
DETECTORS: dict[str, tuple[tuple[int, float, float], ...]] = {
    SHIPPED: CASCADE,
    **{_step_name(*step): (step,) for step in CASCADE},
    **{_step_name(side, 0.5): ((side, 0.5, 1.0),) for side in (128, 256)},
}
BASELINE = _step_name(*CASCADE[0])
SMALL_FACES = _step_name(*CASCADE[-1])


def _load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def image_sets(data: Path, limit: int | None) -> dict[str, list[Path]]:
    """FACECOM train split into news photos (250x250) and portraits, and UTKFace val."""
    news, portraits = [], []
    for p in sorted((data / "facecom" / "train").glob("*/*.jpg")):
        with Image.open(p) as img:
            (news if img.size == (250, 250) else portraits).append(p)
    utk = sorted((data / "utkface" / "val").glob("*/*.jpg"))
    sets = {"FACECOM news 250x250": news, "FACECOM portraits": portraits, "UTKFace val": utk}
    return {k: _sample(v, limit) for k, v in sets.items()}


def _sample(paths: list[Path], limit: int | None, seed: int = 0) -> list[Path]:
    if limit is None or len(paths) <= limit:
        return paths
    return sorted(random.Random(seed).sample(paths, limit))


def _decode(data: bytes) -> Image.Image:
    """The upright RGB image as aligned framings decode it (JPEG draft for big photos)."""
    return _decode_rgb(data, MAX_PIXELS, DRAFT_SIDE)[0]


# --- detect --------------------------------------------------------------------------------


def bench_detect(sets: dict[str, list[Path]]) -> dict:
    out: dict = {}
    for name, paths in sets.items():
        raw = [p.read_bytes() for p in paths]
        t0 = time.process_time()
        images = [_decode(b) for b in raw]
        decode_ms = 1000 * (time.process_time() - t0) / len(images)
        row: dict = {"images": len(images), "decode_ms": decode_ms, "detectors": {}}
        print(f"\n{name}: {len(images)} images, decode {decode_ms:.2f} ms/img", flush=True)
        print(
            f"  {'detector':<20}{'found':>8}{'ms det':>9}{'ms +dec':>9}{'x 1st':>7}"
            f"{'>1 face':>9}{'by later':>9}"
        )
        for det_name, cascade in DETECTORS.items():
            r = _detect_set(images, cascade)
            r["ms_with_decode"] = r["ms"] + decode_ms
            row["detectors"][det_name] = r
        base_ms = row["detectors"][BASELINE]["ms"]
        for det_name, r in row["detectors"].items():
            r["ms_ratio_to_first"] = r["ms"] / base_ms
            fallback = f"{r['fallback_share']:>8.1%}" if "fallback_share" in r else ""
            print(
                f"  {det_name:<20}{r['found_share']:>8.1%}{r['ms']:>9.2f}"
                f"{r['ms_with_decode']:>9.2f}{r['ms_ratio_to_first']:>6.2f}x"
                f"{r['multi_share']:>9.1%} {fallback}"
            )
        out[name] = row
        del images, raw
    return out


def _detect_set(images: list[Image.Image], cascade: tuple[tuple[int, float, float], ...]) -> dict:
    det = FaceDetector(cascade)
    for side, _, _ in cascade:
        det._session(side)  # load every model outside the timing
    for img in images[:20]:
        det.detect(img)  # and run it a little: the first runs are slower
    counts, fallback = [], 0
    t0 = time.process_time()
    for img in images:
        counts.append(len(det.detect(img)))
    ms = 1000 * (time.process_time() - t0) / len(images)
    if len(cascade) > 1:
        # Later steps ran where the first found nothing; repeat that check untimed.
        first = FaceDetector(cascade[:1])
        fallback = sum(
            1 for img, n in zip(images, counts, strict=True) if n and not first.detect(img)
        )
    counts_a = np.asarray(counts)
    r = {
        "found_share": float((counts_a > 0).mean()),
        "ms": ms,
        "multi_share": float((counts_a > 1).mean()),
    }
    if len(cascade) > 1:
        r["fallback_share"] = fallback / len(images)
    return r


# --- stability -----------------------------------------------------------------------------


def _shift(img: Image.Image) -> tuple[Image.Image, Callable[[np.ndarray], np.ndarray]]:
    dx, dy = 3, 2
    out = Image.new("RGB", img.size)
    out.paste(img, (dx, dy))
    return out, lambda e: e - [dx, dy]


def _scale(k: float) -> Callable:
    def perturb(img: Image.Image):
        w, h = img.size
        out = img.resize((round(w * k), round(h * k)), Image.Resampling.BILINEAR)
        sx, sy = out.size[0] / w, out.size[1] / h
        return out, lambda e: e / [sx, sy]

    return perturb


def _jpeg60(img: Image.Image):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=60)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), lambda e: e


def _small(img: Image.Image):
    w, h = img.size
    out = Image.new("RGB", (3 * w, 3 * h))
    out.paste(img, (w, h))
    return out, lambda e: e - [w, h]


#: (label, change, detector): every change under the cascade as shipped; the small face also
#: under the cascade's last step (the 256 px model) alone.
STABILITY: tuple[tuple[str, Callable, str], ...] = (
    ("shift (3, 2) px", _shift, SHIPPED),
    ("scale 0.9", _scale(0.9), SHIPPED),
    ("scale 1.1", _scale(1.1), SHIPPED),
    ("JPEG quality 60", _jpeg60, SHIPPED),
    ("in a 3x canvas", _small, SHIPPED),
    ("in a 3x canvas", _small, SMALL_FACES),
)


def bench_stability(sets: dict[str, list[Path]]) -> dict:
    ref_det = FaceDetector()
    dets = {name: FaceDetector(DETECTORS[name]) for _, _, name in STABILITY}
    out: dict = {}
    print("\neye displacement after a small change, % of the original eye distance")
    print(
        f"  {'set':<22}{'change':<17}{'detector':<19}{'faces':>6}{'median':>8}{'p95':>7}{'lost':>7}"
    )
    for name, paths in sets.items():
        errors: list[list[float]] = [[] for _ in STABILITY]
        lost = [0] * len(STABILITY)
        n_ref = 0
        for p in paths:
            img = _decode(p.read_bytes())
            ref = main_face(ref_det.detect(img))
            if ref is None:
                continue
            n_ref += 1
            eyes = ref.landmarks[:2]
            dist = float(np.linalg.norm(eyes[1] - eyes[0]))
            for i, (_, perturb, det_name) in enumerate(STABILITY):
                moved, back = perturb(img)
                face = main_face(dets[det_name].detect(moved))
                if face is None:
                    lost[i] += 1
                    continue
                errors[i].extend(
                    100 * np.linalg.norm(back(face.landmarks[:2]) - eyes, axis=1) / dist
                )
        out[name] = []
        for (label, _, det_name), errs, n_lost in zip(STABILITY, errors, lost, strict=True):
            e = np.asarray(errs)
            r = {
                "change": label,
                "detector": det_name,
                "faces": n_ref,
                "median_pct": float(np.median(e)) if e.size else None,
                "p95_pct": float(np.percentile(e, 95)) if e.size else None,
                "lost_share": n_lost / max(n_ref, 1),
            }
            out[name].append(r)
            med = f"{r['median_pct']:.1f}" if e.size else "-"
            p95 = f"{r['p95_pct']:.1f}" if e.size else "-"
            print(
                f"  {name:<22}{label:<17}{det_name:<19}{n_ref:>6}{med:>8}{p95:>7}"
                f"{r['lost_share']:>7.1%}"
            )
    return out


# --- template ------------------------------------------------------------------------------


def bench_template(data: Path, n: int) -> dict:
    per_class = n // 2
    paths = []
    for label in ("female", "male"):
        paths += _sample(sorted((data / "utkface" / "train" / label).glob("*.jpg")), per_class)
    det = FaceDetector()
    points = []
    for p in paths:
        img = _decode(p.read_bytes())
        face = main_face(det.detect(img))
        if face is not None:
            points.append(face.landmarks[:4] / np.asarray(img.size, dtype=float))
    pts = np.asarray(points)
    mean, std = pts.mean(axis=0), pts.std(axis=0)
    shipped = np.asarray(UTKFACE_TEMPLATE)
    names = ("right eye", "left eye", "nose", "mouth")
    print(f"\ntemplate from {len(pts)} of {len(paths)} UTKFace train crops with a face")
    print(
        f"  {'point':<11}{'derived x, y':>18}{'shipped x, y':>18}{'diff % side':>16}{'sd x, y':>16}"
    )
    for i, name in enumerate(names):
        diff = 100 * (mean[i] - shipped[i])
        print(
            f"  {name:<11}{mean[i, 0]:>9.4f}{mean[i, 1]:>9.4f}{shipped[i, 0]:>9.4f}"
            f"{shipped[i, 1]:>9.4f}{diff[0]:>8.2f}{diff[1]:>8.2f}{std[i, 0]:>8.3f}{std[i, 1]:>8.3f}"
        )
    return {
        "crops": len(paths),
        "with_face": len(pts),
        "derived": mean.round(4).tolist(),
        "shipped": shipped.tolist(),
        "sd": std.round(4).tolist(),
        "max_abs_diff_pct_side": float(np.abs(100 * (mean - shipped)).max()),
    }


# --- framing -------------------------------------------------------------------------------


def bench_framing(paths: list[Path], rounds: int) -> dict:
    raw = [p.read_bytes() for p in paths]
    framings = {"off": Framing(), "align": Framing(FaceMode.ALIGN)}
    for f in framings.values():
        decode_framed(raw[0], [(64, f)])  # sessions loaded outside the timing
    times: dict[str, list[float]] = {k: [] for k in framings}
    for _ in range(rounds):
        for key, framing in framings.items():
            t0 = time.process_time()
            for b in raw:
                decode_framed(b, [(64, framing)])
            times[key].append(1000 * (time.process_time() - t0) / len(raw))
    ms = {k: statistics.median(v) for k, v in times.items()}
    ratio = ms["align"] / ms["off"]
    print(
        f"\ndecode_framed at 64 px, {len(raw)} FACECOM news photos, median of {rounds} rounds: "
        f"off {ms['off']:.2f} ms/img, align {ms['align']:.2f} ms/img ({ratio:.1f}x)"
    )
    return {"images": len(raw), "rounds": rounds, "ms": ms, "align_over_off": ratio}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=["all", "detect", "stability", "template", "framing"],
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--limit", type=int, default=None, help="images per set for detect (all)")
    ap.add_argument("--stability-images", type=int, default=300, help="images per set")
    ap.add_argument("--template-images", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="framing: interleaved rounds")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = ap.parse_args(argv)
    if not (args.data / "facecom").is_dir() or not (args.data / "utkface").is_dir():
        ap.error(f"--data {args.data}: no facecom/ and utkface/ folders there")
    result: dict = {
        "command": " ".join(["python", "benchmarks/bench_faces.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_start": _load_avg(),
    }
    print(f"load average at start: {result['load_average_start']}", flush=True)
    todo = ("detect", "stability", "template", "framing") if args.what == "all" else (args.what,)
    if "detect" in todo:
        result["detect"] = bench_detect(image_sets(args.data, args.limit))
    if "stability" in todo:
        result["stability"] = bench_stability(image_sets(args.data, args.stability_images))
    if "template" in todo:
        result["template"] = bench_template(args.data, args.template_images)
    if "framing" in todo:
        news = image_sets(args.data, args.limit)["FACECOM news 250x250"]
        result["framing"] = bench_framing(news, args.rounds)
    result["load_average_end"] = _load_avg()
    print(f"\nload average at the end: {result['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
