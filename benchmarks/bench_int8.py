"""INT8 against fp32 per backbone, as ``genderscore convert --int8 --int8-format auto`` decides.

    python benchmarks/bench_int8.py [--size 224] [--batch 8] [--seconds 5] [--backbones ...]

For each backbone (random weights, BatchNorm statistics from synthetic faces, built with
``models.build``): convert to fp32 ONNX, quantize with ONNX Runtime's static QDQ per-channel
in both U8S8 (uint8 activations, int8 weights) and S8S8 (quantize_static's default), then
time each session at ``--batch`` on the same random uint8 batch (median batch time over
``--seconds``, default ORT threading: all cores). Printed: img/s per format, the ratio to
fp32, and what ``--int8-format auto`` keeps (int8 must beat fp32 by 1.15x). Repeat a timing
that surprises you: on these 2-core machines the second core sometimes runs at half speed.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument(
        "--backbones", nargs="+", default=["mobilenetv2", "efficientnetb0", "resnet50"]
    )
    args = parser.parse_args()

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
