"""Which parts of a backbone pay in int8: quantization variants timed op by op.

    python benchmarks/bench_int8_ops.py [--backbone efficientnetb0] [--size 224] [--threads 1]
        [--rounds 3] [--seconds 4] [--profile fp32 qdq-all qdq-conv]

One backbone (random weights, BatchNorm statistics from synthetic faces, as in
``bench_int8.py``) converted to fp32 ONNX, then quantized with ONNX Runtime's static
quantization (uint8 activations, int8 weights, MinMax calibration on 32 synthetic faces) in
the variants below. Each session is timed at batch 8 with ``--threads`` ORT threads (1: the
scorer's layout, one single-thread actor per CPU), median batch time, in interleaved rounds
(the best round is printed, with the others, since a neighbour's burst hits one round).
Printed per variant: ms per image, the speed-up over fp32 and the largest change of an
output probability; then, for the ``--profile`` variants, ORT's own profile: the share and ms
per image of each kind of kernel. Variants:

- ``qdq-all`` / ``qop-all``: every op ORT can quantize, QDQ or QOperator format (``qdq-all``
  is what ``convert --int8`` writes);
- ``qdq-conv``: only the convolutions, the element-wise swish (Sigmoid, Mul) and residual
  Adds left in fp32;
- ``qdq-all-fp32-depthwise``: everything but the depthwise convolutions;
- ``qdq-all-fp32-se``: everything but the squeeze-and-excitation blocks' convolutions;
- ``qdq-all-per-tensor``: ``qdq-all`` with one weight scale per tensor, not per channel.

With ``--model`` (a trained fp32 ONNX model, e.g. the reference recipe's
``WORK/onnx/efficientnetb0.onnx``), ``--data`` (a labeled manifest) and ``--calibration`` (a
manifest of training images), the variants quantize that model, calibrated on those images
framed as the model was trained, and each also prints its ROC AUC on ``--data`` and the drop
from fp32's.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BATCH = 8
CALIBRATION_IMAGES = 32
VARIANTS = (
    "qdq-all",
    "qop-all",
    "qdq-conv",
    "qdq-all-fp32-depthwise",
    "qdq-all-fp32-se",
    "qdq-all-per-tensor",
)


def build_fp32(backbone: str, size: int, out: Path) -> None:
    """The fp32 ONNX model, built and converted in a subprocess: TensorFlow stays out of the
    process that times ONNX Runtime."""
    code = (
        "import sys; from pathlib import Path; sys.path[:0] = [sys.argv[1], sys.argv[1] + "
        "'/benchmarks']\n"
        "from bench_int8 import build\nfrom convert.converter import convert_model\n"
        "from models.registry import get_backbone\n"
        "b, size, out = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])\n"
        "build(b, size, out.with_suffix('.keras'))\n"
        "convert_model(out.with_suffix('.keras'), out, preprocess=get_backbone(b).preprocessing)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(
        [sys.executable, "-c", code, str(REPO), backbone, str(size), str(out)], check=True, env=env
    )


def node_groups(path: Path) -> dict[str, list[str]]:
    """Node names by role: the genderscore wrapper (kept fp32 by ``convert``), depthwise
    convolutions (group > 1) and squeeze-and-excitation convolutions (fed by a global pool)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: n for n in graph.node for out in n.output}

    def group(node: object) -> int:
        return next((a.i for a in node.attribute if a.name == "group"), 1)

    def after_pool(node: object, hops: int = 4) -> bool:
        src = producer.get(node.input[0])
        while src is not None and hops > 0:
            if src.op_type in ("GlobalAveragePool", "ReduceMean"):
                return True
            if src.op_type not in ("Squeeze", "Unsqueeze", "Reshape", "Mul", "Sigmoid", "Conv"):
                return False
            src, hops = producer.get(src.input[0]), hops - 1
        return False

    convs = [n for n in graph.node if n.op_type == "Conv"]
    return {
        "wrapper": [n.name for n in graph.node if n.name.startswith(("preprocess/", "head/"))],
        "depthwise": [n.name for n in convs if group(n) > 1],
        "se": [n.name for n in convs if group(n) == 1 and after_pool(n)],
    }


def quantize(prepared: Path, out: Path, variant: str, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    groups = node_groups(prepared)
    exclude = list(groups["wrapper"])
    if variant.endswith("fp32-depthwise"):
        exclude += groups["depthwise"]
    if variant.endswith("fp32-se"):
        exclude += groups["se"]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                {"image": calibration[i : i + BATCH]} for i in range(0, len(calibration), BATCH)
            )

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QOperator if variant.startswith("qop") else QuantFormat.QDQ,
        per_channel=not variant.endswith("per-tensor"),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
        calibrate_method=CalibrationMethod.MinMax,
        **({"op_types_to_quantize": ["Conv"]} if variant == "qdq-conv" else {}),
    )


def session(path: Path, threads: int, profile: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ms_per_image(path: Path, images: np.ndarray, threads: int, seconds: float) -> float:
    """Median batch time over ``seconds`` after a warm-up, per image."""
    s = session(path, threads)
    for _ in range(2):
        s.run(None, {"image": images})
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        start = time.perf_counter()
        s.run(None, {"image": images})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)) / len(images)


def op_profile(path: Path, images: np.ndarray, threads: int, work: Path) -> list[tuple]:
    """(kernel, share of the time, ms per image, kernels per run), slowest first."""
    s = session(path, threads, profile=str(work / f"profile-{path.stem}"))
    runs = 6
    for _ in range(runs):
        s.run(None, {"image": images})
    events = json.loads(Path(s.end_profiling()).read_text())
    total: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    whole = sum(total.values())
    scale = runs * len(images) * 1000  # microseconds per run -> ms per image
    return [(op, d / whole, d / scale, count[op] // runs) for op, d in total.most_common(8)]


def labeled_images(manifest: Path, model: Path) -> tuple[np.ndarray, np.ndarray]:
    """The manifest's images decoded and framed as ``model`` was trained, and their labels
    (1 = the model's positive class)."""
    from convert.metadata import read_metadata
    from models.data import decode_samples, discover_eval_data

    meta = read_metadata(model)
    samples, _ = discover_eval_data(manifest)
    images = decode_samples(samples, meta.input_size, meta.positive_class, framing=meta.framing)
    return images.pixels.astype(np.uint8), images.targets


def probabilities(path: Path, images: np.ndarray, threads: int) -> np.ndarray:
    """The model's first output over ``images`` in batches of 64."""
    s = session(path, threads)
    out = [s.run(None, {"image": images[i : i + 64]})[0] for i in range(0, len(images), 64)]
    return np.concatenate(out).reshape(len(images), -1)[:, -1]


def calibration_images(size: int) -> np.ndarray:
    from models.synthetic import synthetic_face

    rng = np.random.default_rng(0)
    faces = [synthetic_face(i % 2, rng, (size, size)) for i in range(CALIBRATION_IMAGES)]
    return np.stack([np.asarray(f) for f in faces]).astype(np.uint8)


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """Every variant's model file, fp32 first."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = work / f"{args.backbone}.onnx"
    if args.model:
        fp32.write_bytes(args.model.read_bytes())
        calibration, _ = labeled_images(args.calibration, args.model)
    else:
        build_fp32(args.backbone, args.size, fp32)
        calibration = calibration_images(args.size)
    prepared = work / "prepared.onnx"
    # Shape inference and fp32 fusions first, as convert does (ORT's quantization guide).
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    paths = {"fp32": fp32}
    for variant in VARIANTS:
        paths[variant] = work / f"{variant}.onnx"
        quantize(prepared, paths[variant], variant, calibration)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="efficientnetb0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1, help="ORT threads per session")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    ap.add_argument("--seconds", type=float, default=4.0, help="per timing")
    ap.add_argument("--profile", nargs="*", default=["fp32", "qdq-all", "qdq-conv"])
    ap.add_argument("--model", type=Path, help="a trained fp32 ONNX model (default: built)")
    ap.add_argument("--data", type=Path, help="with --model: labeled manifest for the AUC")
    ap.add_argument("--calibration", type=Path, help="with --model: calibration manifest")
    args = ap.parse_args()
    if args.model and not (args.data and args.calibration):
        ap.error("--model needs --data (labeled images for the AUC) and --calibration")
    sys.path.insert(0, str(REPO))
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-int8-ops-") as tmp:
        work = Path(tmp)
        paths = prepare(args, work)
        if args.model:
            val_images, y = labeled_images(args.data, args.model)
            images = val_images[:BATCH]
        else:
            images = np.random.default_rng(1).integers(
                0, 256, (BATCH, args.size, args.size, 3), dtype=np.uint8
            )
        rounds: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(args.rounds):
            for name, path in paths.items():
                rounds[name].append(ms_per_image(path, images, args.threads, args.seconds))
        base = min(rounds["fp32"])
        reference = session(paths["fp32"], args.threads).run(None, {"image": images})[0]
        size = images.shape[1]
        print(f"\n{args.backbone}, {size} px, batch {BATCH}, {args.threads} thread(s)")
        auc32 = None
        for name, path in paths.items():
            out = session(path, args.threads).run(None, {"image": images})[0]
            best = min(rounds[name])
            accuracy = ""
            if args.model:
                from sklearn.metrics import roc_auc_score

                auc = float(roc_auc_score(y, probabilities(path, val_images, args.threads)))
                auc32 = auc if auc32 is None else auc32
                accuracy = f"  AUC {auc:.4f} (drop {auc32 - auc:+.4f}, {len(y)} images)"
            print(
                f"{name:24s} {best:7.2f} ms/img  {base / best:5.2f}x fp32"
                f"  max |dp| {float(np.abs(out - reference).max()):.4f}{accuracy}"
                f"  rounds {', '.join(f'{t:.2f}' for t in rounds[name])}"
            )
        for name in args.profile:
            print(f"\nORT profile, {name}:")
            for op, share, ms, n in op_profile(paths[name], images, args.threads, work):
                print(f"  {op:26s} {100 * share:5.1f}%  {ms:6.2f} ms/img  x{n}")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
