"""End-to-end scoring speed against its ceiling and two baselines, in one run.

    python benchmarks/bench_scoring.py [--images 2000] [--size 224] [--work /tmp/bench_scoring]

Three models (MobileNetV2, EfficientNetB0, ResNet50; random weights; built with
``models.build`` and converted with ``convert``) score ``--images`` face photos from
``../shared/data`` (UTKFace 200x200 and FACECOM 250x250 JPEGs, mixed). Printed, in img/s:

- ``scoring run``: ``scoring.run.score_manifest`` end to end (Ray start, staging, decode,
  ONNX Runtime actors, Parquet, commit, Ray shutdown), default settings;
- ceiling (a): the same ORT sessions over pre-decoded tensors, no I/O; measured both as one
  process with all cores and as one single-thread process per core (the scorer's layout); the
  better one is the ceiling;
- plain loop (b): one process, read + decode + three sessions + Parquet, no Ray;
- Keras baseline (c): the seed's way: images loaded, then ``model.predict`` per Keras model.

Keras and the conversion run in subprocesses so the timed ORT processes never load TensorFlow.
The targets (issue 4): ``scoring run`` >= 0.9 x the ceiling and ahead of the Keras baseline.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BACKBONES = ("mobilenetv2", "efficientnetb0", "resnet50")
BATCH = 16  # the scorer's default batch size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="images to score (>= 2000)")
    ap.add_argument("--size", type=int, default=224, help="model input size in pixels")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared face data folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_scoring"), help="work folder")
    ap.add_argument("--skip-keras", action="store_true", help="leave out the Keras baseline")
    ap.add_argument("--skip-plain", action="store_true", help="leave out the plain loop")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    paths = pick_images(args.data, args.images)
    manifest = write_manifest(args.work / "manifest.csv", paths)
    onnx_paths = build_models(args.work / "models", args.size)
    cpus = os.cpu_count() or 1
    print(f"{len(paths)} images, {args.size} px, models {', '.join(BACKBONES)}, {cpus} CPUs")

    results: dict[str, float] = {}
    images = decode_all(paths, args.size)
    results["ceiling, 1 process x all threads"] = ceiling_threads(onnx_paths, images, cpus)
    results["ceiling, 1 thread x 1 process per CPU"] = ceiling_processes(onnx_paths, images, cpus)
    del images
    if not args.skip_plain:
        results["plain single-process loop"] = plain_loop(
            onnx_paths, paths, args.size, cpus, args.work
        )
    results["scoring run (Ray Data, end to end)"] = scoring_run(onnx_paths, manifest, args.work)
    if not args.skip_keras:
        results["Keras baseline (load + model.predict x3)"] = keras_baseline(
            args.work, paths, args.size
        )

    ceiling = max(v for k, v in results.items() if k.startswith("ceiling"))
    e2e = results["scoring run (Ray Data, end to end)"]
    print()
    print(f"{'what':<45} {'img/s':>8} {'scoring run / this':>19}")
    for name, value in results.items():
        print(f"{name:<45} {value:8.1f} {e2e / value:19.2f}")
    print(f"\nscoring run / ceiling = {e2e / ceiling:.2f} (target >= 0.90)")
    keras = results.get("Keras baseline (load + model.predict x3)")
    if keras:
        print(f"scoring run / Keras baseline = {e2e / keras:.2f} (target > 1)")
    (args.work / "results.json").write_text(json.dumps(results, indent=2))


# --- inputs --------------------------------------------------------------------------------


def pick_images(data: Path, n: int) -> list[str]:
    """``n`` JPEGs alternating UTKFace (200x200) and FACECOM (250x250) photos, in a fixed order."""
    pools = [
        sorted((data / "utkface" / "train" / c).glob("*.jpg"))[: n // 2 + 1]
        for c in ("female", "male")
    ] + [sorted((data / "facecom" / "train" / c).glob("*.jpg")) for c in ("female", "male")]
    out: list[str] = []
    iters = [iter(p) for p in pools]
    while len(out) < n and iters:
        for it in list(iters):
            try:
                out.append(str(next(it)))
            except StopIteration:
                iters.remove(it)
            if len(out) == n:
                break
    if len(out) < n:
        raise SystemExit(f"only {len(out)} images under {data}")
    return out


def write_manifest(path: Path, images: list[str]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows((p, Path(p).parent.name) for p in images)
    return path


def build_models(folder: Path, size: int) -> list[str]:
    """Random-weight Keras models converted to ONNX (cached in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_paths = [str(folder / f"{b}_{size}.onnx") for b in BACKBONES]
    if all(Path(p).is_file() for p in onnx_paths):
        return onnx_paths
    code = f"""
import logging
logging.basicConfig(level=logging.WARNING)
from models.build import build_model
from models.registry import get_backbone
from convert.converter import convert_model
for b in {BACKBONES!r}:
    keras_path = {str(folder)!r} + f"/{{b}}_{size}.keras"
    build_model(b, {size}, weights="none").save(keras_path)
    convert_model(keras_path, {str(folder)!r} + f"/{{b}}_{size}.onnx",
        preprocess=get_backbone(b).preprocessing, class_names=("female", "male"),
        positive="male", name=b)
    print("built", b, flush=True)
"""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=_quiet_env())
    print(f"built and converted the models in {time.perf_counter() - t0:.0f} s")
    return onnx_paths


def _quiet_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}


def decode_all(paths: list[str], size: int) -> np.ndarray:
    from models.imageio import decode_image, read_image_bytes

    return np.stack([decode_image(read_image_bytes(p), [size])[0] for p in paths])


# --- (a) the ORT ceiling -------------------------------------------------------------------


def _run_sessions(onnx_paths: list[str], images: np.ndarray, threads: int) -> float:
    """Seconds for the scorer's sessions over pre-decoded ``images`` in batches (no I/O)."""
    from scoring.onnx_scorer import make_session, predict_probs

    sessions = [make_session(p, threads) for p in onnx_paths]
    for s in sessions:  # warm-up, as the actors' first batch
        predict_probs(s, images[:BATCH])
    t0 = time.perf_counter()
    for i in range(0, len(images), BATCH):
        for s in sessions:
            predict_probs(s, images[i : i + BATCH])
    return time.perf_counter() - t0


def ceiling_threads(onnx_paths: list[str], images: np.ndarray, cpus: int) -> float:
    seconds = _run_sessions(onnx_paths, images, cpus)
    return len(images) / seconds


def _shard_worker(args: tuple[list[str], np.ndarray, mp.Barrier]) -> float:
    onnx_paths, images, barrier = args
    from scoring.onnx_scorer import make_session, predict_probs

    sessions = [make_session(p, 1) for p in onnx_paths]
    for s in sessions:
        predict_probs(s, images[:BATCH])
    barrier.wait()
    t0 = time.perf_counter()
    for i in range(0, len(images), BATCH):
        for s in sessions:
            predict_probs(s, images[i : i + BATCH])
    return time.perf_counter() - t0


def ceiling_processes(onnx_paths: list[str], images: np.ndarray, cpus: int) -> float:
    """One single-thread process per CPU, each over its share, started together."""
    ctx = mp.get_context("spawn")
    shards = np.array_split(images, cpus)
    with ctx.Manager() as manager:
        barrier = manager.Barrier(cpus)
        with ctx.Pool(cpus) as pool:
            seconds = pool.map(_shard_worker, [(onnx_paths, s, barrier) for s in shards])
    return len(images) / max(seconds)


# --- (b) a plain loop ----------------------------------------------------------------------


def plain_loop(onnx_paths: list[str], paths: list[str], size: int, cpus: int, work: Path) -> float:
    """Read, decode, score with the three sessions, write Parquet: one process, no Ray."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.imageio import decode_image, read_image_bytes
    from scoring.onnx_scorer import make_session, predict_probs

    t0 = time.perf_counter()
    sessions = [make_session(p, cpus) for p in onnx_paths]
    probs: list[list[np.ndarray]] = [[] for _ in sessions]
    for i in range(0, len(paths), BATCH):
        batch = np.stack(
            [decode_image(read_image_bytes(p), [size])[0] for p in paths[i : i + BATCH]]
        )
        for j, s in enumerate(sessions):
            probs[j].append(predict_probs(s, batch))
    cols = {"path": paths} | {
        f"p_{b}": np.concatenate(p) for b, p in zip(BACKBONES, probs, strict=True)
    }
    pq.write_table(pa.table(cols), work / "plain.parquet")
    return len(paths) / (time.perf_counter() - t0)


# --- the scorer ----------------------------------------------------------------------------


def scoring_run(onnx_paths: list[str], manifest: Path, work: Path) -> float:
    from scoring.run import score_manifest

    out = work / "scores"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = score_manifest(manifest, models=onnx_paths, out=out, progress=False)
    seconds = time.perf_counter() - t0
    s = result.summary
    print(
        f"scoring run: {s['rows']} rows ({s['rows_by_status']}) in {seconds:.1f} s, pipeline "
        f"{s['pipeline_time_s']:.1f} s, {s['ray']['workers']} workers x "
        f"{s['ray']['worker_threads']} thread(s)"
    )
    print(f"scoring run without Ray start and stop: {s['rows'] / s['pipeline_time_s']:.1f} img/s")
    return s["rows"] / seconds


# --- (c) the seed's Keras way ---------------------------------------------------------------


def keras_baseline(work: Path, paths: list[str], size: int) -> float:
    """Load every image, then ``model.predict`` with each of the three Keras models."""
    list_file = work / "keras_paths.json"
    list_file.write_text(json.dumps(paths))
    code = f"""
import json, time
import numpy as np
import keras
from models.imageio import load_image
from models.preprocessing import preprocess
names = {list(BACKBONES)!r}
from models.registry import get_backbone
prep = {{b: get_backbone(b).preprocessing for b in names}}
models = [keras.models.load_model({str(work / "models")!r} + f"/{{b}}_{size}.keras") for b in names]
paths = json.load(open({str(list_file)!r}))
for b, m in zip(names, models):  # warm-up (graph tracing), outside the timing
    m.predict(preprocess(np.zeros((32, {size}, {size}, 3), np.float32), prep[b]), verbose=0)
t0 = time.perf_counter()
images = np.stack([load_image(p, {size}) for p in paths]).astype(np.float32)
for b, m in zip(names, models):
    m.predict(preprocess(images, prep[b]), batch_size=32, verbose=0)
print(json.dumps(len(paths) / (time.perf_counter() - t0)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=REPO,
        env=_quiet_env(),
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
