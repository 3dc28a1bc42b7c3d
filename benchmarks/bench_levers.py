"""Levers of the scorer measured one against another, interleaved in one run.

    python benchmarks/bench_levers.py [--what decode ort] [--rounds 3] [--work /tmp/bench_scoring]

- ``decode``: read + decode + resize to 224 (one core) of UTKFace 200x200, FACECOM
  250x250 and FACECOM's large portraits (up to 1024 px), with ``models.imageio`` (Pillow, the
  loader training used), Pillow with ``draft()`` (JPEG DCT scaling: decode at 1/2, 1/4, 1/8
  size when that still covers 224), simplejpeg (``min_height``/``min_width`` reduced decode,
  then Pillow's bilinear resize) and OpenCV (``imdecode`` + ``INTER_LINEAR``); and how far
  each one's pixels are from the training loader's (mean |difference|, 0-255).
- ``arena``: ONNX Runtime's CPU memory arena on (the scorer's default) or off, for the
  three-model ensemble at batch 16 in one single-thread process (a scorer actor): resident
  memory after scoring, and speed (each configuration in a fresh process).
- ``ort``: the scorer's sessions (``scoring.onnx_scorer.make_session``, one thread: the
  scorer's actor) over pre-decoded 224 px images: graph optimisation level (disabled, basic,
  extended, all) per model, and batch size (1 to 64) for the three-model ensemble, for the
  fp32 and int8 models ``bench_scoring.py`` built (run it first: ``--work`` is its folder).

Every configuration runs on one thread and is timed in CPU time (``time.process_time``: images
per CPU-second), ``--rounds`` times, rounds interleaved, and the median printed: on a shared
machine wall time measures the neighbours, CPU time mostly the code (cache and memory
bandwidth contention still leak in, so compare within one run).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SIZE = 224
BACKBONES = ("mobilenetv2", "efficientnetb0", "resnet50")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--what", nargs="+", default=["decode", "ort"], choices=["decode", "ort", "arena"]
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=300, help="images per decode set")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_scoring"))
    args = ap.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if "decode" in args.what:
        bench_decode(args.data, args.images, args.rounds)
    if "ort" in args.what:
        bench_ort(args.work / "models", args.rounds)
    if "arena" in args.what:
        bench_arena(args.work / "models", args.rounds)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def interleaved(configs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of ``rounds`` timings per configuration, configurations interleaved."""
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(rounds):
        for name, fn in configs.items():
            times[name].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


# --- decode --------------------------------------------------------------------------------


def image_sets(data: Path, n: int) -> dict[str, list[bytes]]:
    from PIL import Image

    utk = sorted((data / "utkface" / "val" / "male").glob("*.jpg"))[:n]
    facecom = sorted((data / "facecom" / "train" / "male").glob("*.jpg"))
    small, large = [], []
    for p in facecom:
        with Image.open(p) as img:
            (large if max(img.size) > 400 else small).append(p)
    return {
        "UTKFace 200x200": [p.read_bytes() for p in utk],
        "FACECOM 250x250": [p.read_bytes() for p in small[:n]],
        f"FACECOM large ({len(large[:n])} portraits)": [p.read_bytes() for p in large[:n]],
    }


def decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
    from PIL import Image

    from models.imageio import decode_image

    def imageio_(data: bytes) -> np.ndarray:
        return decode_image(data, [SIZE])[0]

    def pil_draft(data: bytes) -> np.ndarray:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (SIZE, SIZE))  # largest DCT scale that still covers 224x224
        img = img.convert("RGB")
        return np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BILINEAR))

    out = {"Pillow (models.imageio)": imageio_, "Pillow + draft()": pil_draft}
    try:
        import simplejpeg

        def sj(data: bytes) -> np.ndarray:
            arr = simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_height=SIZE, min_width=SIZE, fastdct=False
            )
            return np.asarray(Image.fromarray(arr).resize((SIZE, SIZE), Image.Resampling.BILINEAR))

        out["simplejpeg (reduced) + Pillow resize"] = sj
    except ImportError:
        print("simplejpeg not installed: pip install simplejpeg")
    try:
        import cv2

        cv2.setNumThreads(1)

        def cv(data: bytes) -> np.ndarray:
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            arr = cv2.resize(arr, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)

        out["OpenCV imdecode + resize"] = cv
    except ImportError:
        print("OpenCV not installed: pip install opencv-python-headless")
    return out


def bench_decode(data: Path, n: int, rounds: int) -> None:
    sets = image_sets(data, n)
    decs = decoders()
    print(
        f"\ndecode + resize to {SIZE}, one core, img per CPU-s (median of {rounds} interleaved rounds)"
    )
    print(f"{'decoder':<38}" + "".join(f"{k:>30}" for k in sets))
    ref = {k: [decs["Pillow (models.imageio)"](b) for b in v[:50]] for k, v in sets.items()}
    rows = {}
    for set_name, blobs in sets.items():

        def timer(fn: Callable[[bytes], np.ndarray], blobs: list[bytes] = blobs) -> float:
            t0 = time.process_time()
            for b in blobs:
                fn(b)
            return len(blobs) / (time.process_time() - t0)

        speeds = interleaved({k: (lambda f=f: timer(f)) for k, f in decs.items()}, rounds)
        for k, v in speeds.items():
            diff = np.mean(
                [
                    np.abs(decs[k](b).astype(np.int16) - r.astype(np.int16)).mean()
                    for b, r in zip(blobs[:50], ref[set_name], strict=True)
                ]
            )
            rows.setdefault(k, []).append(f"{v:9.0f} (|d| {diff:4.1f})")
    for k, cells in rows.items():
        print(f"{k:<38}" + "".join(f"{c:>30}" for c in cells))


# --- ONNX Runtime --------------------------------------------------------------------------


def bench_ort(models: Path, rounds: int) -> None:
    import onnxruntime as ort

    from scoring.onnx_scorer import make_session

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, SIZE, SIZE, 3), dtype=np.uint8)
    levels = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all (scorer)": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    for precision in ("fp32", "int8"):
        suffix = "" if precision == "fp32" else "_int8"
        paths = {b: models / f"{b}_{SIZE}{suffix}.onnx" for b in BACKBONES}
        if not all(p.is_file() for p in paths.values()):
            print(f"no {precision} models in {models}: run bench_scoring.py first")
            continue
        print(f"\n{precision}: graph optimisation level, 1 thread, batch 16, img per CPU-s")
        print(f"{'model':<16}" + "".join(f"{k:>14}" for k in levels))
        for b, path in paths.items():
            sessions: dict[str, object] = {}
            for name, level in levels.items():
                # make_session fixes level ALL: the same options with the level under test.
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                opts.graph_optimization_level = level
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                opts.log_severity_level = 3
                s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                sessions[name] = s
            speeds = interleaved(
                {k: (lambda s=s: _rate(s, images, 16, 48)) for k, s in sessions.items()}, rounds
            )
            print(f"{b:<16}" + "".join(f"{speeds[k]:14.1f}" for k in levels), flush=True)
        ens = [make_session(str(p), 1) for p in paths.values()]
        batches = (1, 4, 8, 16, 32, 64)
        speeds = interleaved(
            {str(bs): (lambda bs=bs, ens=ens: _ensemble_rate(ens, images, bs)) for bs in batches},
            rounds,
        )
        print(f"{precision}: batch size, three models in a row, 1 thread, img per CPU-s")
        print("".join(f"{'batch ' + k:>12}" for k in speeds))
        print("".join(f"{v:12.1f}" for v in speeds.values()), flush=True)


ARENA_CODE = """
import sys, time, numpy as np, psutil, onnxruntime as ort
from scoring.onnx_scorer import predict_probs
arena, paths = sys.argv[1] == "on", sys.argv[2:]
sessions = []
for path in paths:
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.enable_cpu_mem_arena = arena
    o.log_severity_level = 3
    sessions.append(ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]))
x = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
for s in sessions:
    predict_probs(s, x)
t0 = time.process_time()
for _ in range(4):
    for s in sessions:
        predict_probs(s, x)
print(64 / (time.process_time() - t0), psutil.Process().memory_info().rss)
"""


def bench_arena(models: Path, rounds: int) -> None:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for precision in ("fp32", "int8"):
        suffix = "" if precision == "fp32" else "_int8"
        paths = [str(models / f"{b}_{SIZE}{suffix}.onnx") for b in BACKBONES]
        runs: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
        for _ in range(rounds):
            for arena in runs:
                cmd = [sys.executable, "-c", ARENA_CODE, arena, *paths]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
                speed, rss = out.stdout.split()
                runs[arena].append((float(speed), float(rss)))
        print(f"\n{precision}: ORT memory arena, three models, batch 16, 1 thread")
        for arena, values in runs.items():
            speed = statistics.median(v[0] for v in values)
            rss = statistics.median(v[1] for v in values)
            print(
                f"  arena {arena:<4} {speed:7.1f} img per CPU-s   RSS {rss / 2**30:5.2f} GiB",
                flush=True,
            )


def _rate(session: object, images: np.ndarray, batch: int, n: int) -> float:
    from scoring.onnx_scorer import predict_probs

    predict_probs(session, images[:batch])
    t0 = time.process_time()
    done = 0
    while done < n:
        predict_probs(session, images[:batch])
        done += batch
    return done / (time.process_time() - t0)


def _ensemble_rate(sessions: list[object], images: np.ndarray, batch: int) -> float:
    from scoring.onnx_scorer import predict_probs

    for s in sessions:
        predict_probs(s, images[:batch])
    t0 = time.process_time()
    done = 0
    while done < 64:
        for s in sessions:
            predict_probs(s, images[done : done + batch])
        done += batch
    return done / (time.process_time() - t0)


if __name__ == "__main__":
    main()
