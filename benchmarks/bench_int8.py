"""INT8 against fp32 per backbone, as ``genderscore convert --int8 --int8-format auto`` decides.

    python benchmarks/bench_int8.py [--size 224] [--batch 8] [--seconds 5] [--backbones ...]

For each backbone (random weights, BatchNorm statistics from synthetic faces, built with
``models.build``): convert to fp32 ONNX, quantize with ONNX Runtime's static QDQ per-channel
in both U8S8 (uint8 activations, int8 weights) and S8S8 (quantize_static's default), then
time each session at ``--batch`` on the same random uint8 batch (median batch time over
``--seconds``, default ORT threading: all cores). Printed: img/s per format, the ratio to
fp32, and what ``--int8-format auto`` keeps (int8 must beat fp32 by 1.15x). Repeat a timing
that surprises you: on these 2-core machines the second core sometimes runs at half speed.

With trained models (issue 7 item 2):

    python benchmarks/bench_int8.py --models /work/ref/onnx --data ../shared/data/utkface/val \
        [--ensemble /work/ref/ensemble/far005.json] [--limit N]

For every ``NAME.onnx`` in ``--models`` that has a ``NAME_int8.onnx`` beside it: ROC AUC of
both on the labeled images of ``--data`` (a folder of class folders, a dataset folder or a CSV),
their label agreement at 0.5, and img/s of each session over the pre-decoded images (batch
``--batch``, default threading, best of two passes). With ``--ensemble``, the same for the
ensemble: its combiner over the fp32 members against the same combiner over the int8 members
(fp32 where a member has no int8 file), agreement at the ensemble's threshold, and img/s of
all members in a row.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(backbone: str, size: int, path: Path) -> None:
    import keras
    import numpy as np

    from models.build import build_model
    from models.preprocessing import preprocess
    from models.registry import get_backbone
    from models.synthetic import synthetic_face

    keras.utils.set_random_seed(0)
    model = build_model(backbone, size, weights="none")
    for layer in model.layers[1].layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    rng = np.random.default_rng(0)
    faces = np.stack([np.asarray(synthetic_face(i % 2, rng, (size, size))) for i in range(16)])
    model(preprocess(faces, get_backbone(backbone).preprocessing), training=True)
    model.save(path)


def _throughput(session, images, batch: int, passes: int = 2):
    """(probabilities, img/s): the best of ``passes`` passes over ``images`` after a warm-up."""
    import numpy as np

    session.run(None, {"image": images[:batch]})
    best = 0.0
    probs = None
    for _ in range(passes):
        out = []
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            out.append(session.run(None, {"image": images[i : i + batch]})[0])
        best = max(best, len(images) / (time.perf_counter() - start))
        probs = np.concatenate(out).astype(np.float32)
    return probs, best


def compare_int8(
    models_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    ensemble: str | os.PathLike[str] | None = None,
    batch: int = 16,
    limit: int | None = None,
    seed: int = 0,
) -> dict:
    """INT8 against fp32 for the trained models in ``models_dir`` (see the module docstring).

    Returns ``{"models": {name: {...}}, "ensemble": {...} | None, "n": images}``."""
    import numpy as np

    from convert.export import onnx_session
    from convert.metadata import read_metadata
    from models.data import decode_samples, discover_eval_data
    from models.metrics import binary_metrics

    folder = Path(models_dir)
    fp32_files = sorted(p for p in folder.glob("*.onnx") if not p.stem.endswith("_int8"))
    if not fp32_files:
        raise SystemExit(f"--models {folder}: no .onnx files")
    samples, _ = discover_eval_data(data)
    if limit is not None and limit < len(samples):
        order = np.random.default_rng(seed).permutation(len(samples))[:limit]
        samples = [samples[i] for i in sorted(order)]
    decoded: dict[tuple, object] = {}
    y = None
    fp32_probs: dict[str, np.ndarray] = {}
    int8_probs: dict[str, np.ndarray] = {}
    times = {"fp32": 0.0, "int8": 0.0}
    rows: dict[str, dict] = {}
    for path in fp32_files:
        meta = read_metadata(path)
        # Each model sees its images framed as it was trained (faces aligned or whole).
        key = (tuple(meta.input_size), meta.positive_class, meta.framing)
        if key not in decoded:
            decoded[key] = decode_samples(
                samples, meta.input_size, meta.positive_class, framing=meta.framing
            )
        images = decoded[key]
        y = images.targets
        p32, speed32 = _throughput(onnx_session(path), images.pixels, batch)
        fp32_probs[meta.name] = p32
        times["fp32"] += len(y) / speed32
        auc32 = binary_metrics(y, p32)["roc_auc"]
        row = {"input_size": list(meta.input_size), "auc_fp32": auc32, "img_s_fp32": speed32}
        q_path = folder / f"{path.stem}_int8.onnx"
        if q_path.exists():
            p8, speed8 = _throughput(onnx_session(q_path), images.pixels, batch)
            int8_probs[meta.name] = p8
            times["int8"] += len(y) / speed8
            q = read_metadata(q_path).quantization or {}
            row |= {
                "format": q.get("scheme", q.get("chosen")),
                "auc_int8": binary_metrics(y, p8)["roc_auc"],
                "auc_drop": auc32 - binary_metrics(y, p8)["roc_auc"],
                "agreement": float(np.mean((p32 >= 0.5) == (p8 >= 0.5))),
                "img_s_int8": speed8,
                "speedup": speed8 / speed32,
            }
        else:
            times["int8"] += len(y) / speed32
        rows[meta.name] = row
    result: dict = {"n": int(len(y)), "batch": batch, "models": rows, "ensemble": None}
    if ensemble is not None:
        from scoring.ensemble_spec import EnsembleSpec

        spec = EnsembleSpec.load(ensemble)
        p32 = spec.combine(fp32_probs)
        p8 = spec.combine({**fp32_probs, **int8_probs})
        result["ensemble"] = {
            "file": str(ensemble),
            "int8_members": sorted(int8_probs),
            "threshold": spec.threshold,
            "auc_fp32": binary_metrics(y, p32)["roc_auc"],
            "auc_int8": binary_metrics(y, p8)["roc_auc"],
            "auc_drop": binary_metrics(y, p32)["roc_auc"] - binary_metrics(y, p8)["roc_auc"],
            "agreement": float(np.mean(spec.decide(p32) == spec.decide(p8))),
            "img_s_fp32": len(y) / times["fp32"],
            "img_s_int8": len(y) / times["int8"],
            "speedup": times["fp32"] / times["int8"],
        }
    return result


def print_comparison(result: dict) -> None:
    """The figures of :func:`compare_int8`, one line per model and one for the ensemble."""
    print(f"{result['n']} labeled images, batch {result['batch']}, pre-decoded; img/s of ORT alone")
    entries = list(result["models"].items())
    if result["ensemble"]:
        entries.append(("ensemble", result["ensemble"]))
    for name, r in entries:
        line = f"{name:15s} AUC fp32 {r['auc_fp32']:.4f}"
        if "auc_int8" in r:
            line += (
                f"  int8 {r['auc_int8']:.4f} (drop {r['auc_drop']:+.4f})"
                f"  agreement {r['agreement']:.4f}  img/s fp32 {r['img_s_fp32']:.0f}"
                f"  int8 {r['img_s_int8']:.0f} ({r['speedup']:.2f}x)"
            )
        else:
            line += f"  img/s fp32 {r['img_s_fp32']:.0f}  (no int8 model: fp32 kept)"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument(
        "--backbones", nargs="+", default=["mobilenetv2", "efficientnetb0", "resnet50"]
    )
    parser.add_argument("--models", type=Path, help="folder of trained NAME[_int8].onnx")
    parser.add_argument("--data", type=Path, help="labeled images for --models")
    parser.add_argument("--ensemble", type=Path, help="ensemble.json over the --models")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images")
    args = parser.parse_args()
    if args.models is not None:
        if args.data is None:
            parser.error("--models needs --data (labeled images)")
        result = compare_int8(
            args.models, args.data, ensemble=args.ensemble, batch=args.batch, limit=args.limit
        )
        print_comparison(result)
        return

    from convert.converter import convert_model
    from convert.quantize import choose_format, measure_speed, quantize_model
    from models.registry import get_backbone
    from models.synthetic import write_synthetic_dataset

    size = (args.size, args.size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        work = Path(tmp)
        write_synthetic_dataset(
            work / "calib", args.calibration_images // 2, splits=("train",), size=size
        )
        from convert.checkdata import load_check_images

        calibration = load_check_images(
            work / "calib", size, ("female", "male"), "male", limit=args.calibration_images
        ).images
        for backbone in args.backbones:
            t0 = time.perf_counter()
            keras_path = work / f"{backbone}.keras"
            build(backbone, args.size, keras_path)
            fp32 = work / f"{backbone}.onnx"
            convert_model(
                keras_path, fp32, preprocess=get_backbone(backbone).preprocessing, name=backbone
            )
            paths = {"fp32": fp32}
            qwork = work / f"q_{backbone}"
            qwork.mkdir()
            for fmt in ("u8s8", "s8s8"):
                paths[fmt] = qwork / f"{fmt}.onnx"
                quantize_model(fp32, paths[fmt], calibration, fmt, qwork)
            prep = time.perf_counter() - t0
            speeds = {
                k: measure_speed(p, size, batch=args.batch, seconds=args.seconds)
                for k, p in paths.items()
            }
            kept = choose_format(speeds) or "fp32"
            rows.append((backbone, speeds, kept, prep))
            print(
                f"{backbone:15s} fp32 {speeds['fp32']:7.1f}  u8s8 {speeds['u8s8']:7.1f}"
                f" ({speeds['u8s8'] / speeds['fp32']:.2f}x)  s8s8 {speeds['s8s8']:7.1f}"
                f" ({speeds['s8s8'] / speeds['fp32']:.2f}x)  img/s -> auto keeps {kept}"
                f"  [build+convert+quantize {prep:.0f} s]",
                flush=True,
            )
    print(
        f"\n{args.size} px, batch {args.batch}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
