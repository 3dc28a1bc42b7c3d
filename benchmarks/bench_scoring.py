"""End-to-end scoring speed against its ceiling and two baselines, fp32 and int8, in one run.

    python benchmarks/bench_scoring.py [--images 2000] [--size 224] [--precisions fp32 int8]
        [--layouts default 1x1 1x2] [--faces off align] [--ceiling-images 512]
        [--work /tmp/bench_scoring]

Three models (MobileNetV2, EfficientNetB0, ResNet50; random weights; built with
``models.build`` and converted with ``convert``; ``int8``: converted with ``--int8
--int8-format auto``, calibrated on 16 UTKFace val images, so EfficientNetB0 stays fp32 when
int8 does not pay) score ``--images`` face photos from ``../shared/data`` (UTKFace 200x200
and FACECOM 250x250 JPEGs, mixed). Printed, in img/s, per precision:

- ``scoring run``: ``scoring.run.score_manifest`` end to end (Ray start, staging, decode,
  ONNX Runtime actors, Parquet, commit, Ray shutdown), default settings, and once more per
  ``--layouts`` entry (``WxT``: W actors x T ORT threads; ``1x1`` against ``default``, one
  actor per CPU, is the 1-against-2-workers scale figure);
- ``scoring run, faces align`` (with ``--faces off align``): the default layout once more with
  every model's input the aligned face (detection and alignment in the decode tasks); the
  ratio to the ``off`` run is the cost of face framing (aim: at least 0.8);
- ceiling (a): the same ORT sessions over pre-decoded tensors, no I/O; measured both as one
  process with all cores and as one single-thread process per core (the scorer's layout),
  before and after the scoring runs (the mean of the two, so that a change in the machine's
  load during the run shows and evens out); the better layout is the ceiling;
- plain loop (b): one process, read + decode + three sessions + Parquet, no Ray;
- Keras baseline (c): the seed's way (fp32 Keras, whatever the precision): images loaded,
  then ``model.predict`` per Keras model.

Keras and the conversion run in subprocesses so the timed ORT processes never load TensorFlow.
Targets (issue 7): scoring run >= 0.9 x ceiling; Ray's overhead over the plain loop <= 10%;
>= 1.5 x Keras in fp32 and >= 5 x in int8; int8 >= 2 x fp32. The machine's load average is
printed at the start and the end: on a shared machine compare ratios, not absolute figures.
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
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BACKBONES = ("mobilenetv2", "efficientnetb0", "resnet50")
BATCH = 16  # the scorer's default batch size
CALIBRATION_IMAGES = 16
KERAS = "Keras baseline (fp32, load + model.predict x3)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="images to score (>= 2000)")
    ap.add_argument("--size", type=int, default=224, help="model input size in pixels")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared face data folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_scoring"), help="work folder")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    ap.add_argument(
        "--layouts",
        nargs="+",
        default=["default"],
        help="scoring runs: 'default' and/or WxT (W actors x T threads), e.g. 1x1 2x1 1x2",
    )
    ap.add_argument(
        "--ceiling-images", type=int, default=512, help="pre-decoded images per ceiling timing"
    )
    ap.add_argument(
        "--faces",
        nargs="+",
        default=["off"],
        choices=["off", "align"],
        help="face framings of the default-layout scoring run (off and align: framing's cost)",
    )
    ap.add_argument("--skip-keras", action="store_true", help="leave out the Keras baseline")
    ap.add_argument("--skip-plain", action="store_true", help="leave out the plain loop")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    paths = pick_images(args.data, args.images)
    manifest = write_manifest(args.work / "manifest.csv", paths)
    models = {
        p: build_models(args.work / "models", args.size, p, args.data) for p in args.precisions
    }
    cpus = os.cpu_count() or 1
    load_start = os.getloadavg()
    print(f"{len(paths)} images, {args.size} px, models {', '.join(BACKBONES)}, {cpus} CPUs")
    print(f"load average at start: {_load(load_start)}", flush=True)

    results: dict[str, float] = {}
    images = decode_all(paths[: args.ceiling_images], args.size)
    for precision, onnx_paths in models.items():
        before = ceilings(onnx_paths, images, cpus)
        if not args.skip_plain:
            results[f"{precision} plain single-process loop"] = plain_loop(
                onnx_paths, paths, args.size, cpus, args.work
            )
        for layout in args.layouts:
            results[f"{precision} scoring run, {layout}"] = scoring_run(
                onnx_paths, manifest, args.work, layout
            )
        if "align" in args.faces:
            results[f"{precision} scoring run, {args.layouts[0]}, faces align"] = scoring_run(
                onnx_paths, manifest, args.work, args.layouts[0], faces="align"
            )
        after = ceilings(onnx_paths, images, cpus)
        for name in before:
            print(f"{precision} {name}: before {before[name]:.1f}, after {after[name]:.1f} img/s")
            results[f"{precision} {name}"] = (before[name] + after[name]) / 2
    if not args.skip_keras:
        results[KERAS] = keras_baseline(args.work, paths, args.size)
    load_end = os.getloadavg()
    report(results, args.precisions, args.layouts)
    print(f"\nload average at start: {_load(load_start)}; at the end: {_load(load_end)}")
    record = {"results": results, "load_start": load_start, "load_end": load_end}
    (args.work / "results.json").write_text(json.dumps(record, indent=2))


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load) + " (1, 5, 15 min)"


def report(results: dict[str, float], precisions: list[str], layouts: list[str]) -> None:
    """Every figure, then each target as measured / target."""
    print(f"\n{'what':<58} {'img/s':>8}")
    for name, value in results.items():
        print(f"{name:<58} {value:8.1f}")
    print("\ntargets (ratio, target, met?)")
    keras = results.get(KERAS)
    e2e = {p: results[f"{p} scoring run, {layouts[0]}"] for p in precisions}

    def line(what: str, ratio: float, target: float) -> None:
        print(f"  {what:<60} {ratio:6.2f}  >= {target:<5} {'met' if ratio >= target else 'MISSED'}")

    for p in precisions:
        ceiling = max(v for k, v in results.items() if k.startswith(f"{p} ceiling"))
        line(f"{p} scoring run / ceiling", e2e[p] / ceiling, 0.9)
        plain = results.get(f"{p} plain single-process loop")
        if plain:
            overhead = plain / e2e[p] - 1
            print(
                f"  {p + ' Ray overhead over the plain loop (time)':<60} {overhead:6.1%}  <= 10%"
                f"   {'met' if overhead <= 0.10 else 'MISSED'}"
            )
        if keras:
            line(f"{p} scoring run / Keras baseline", e2e[p] / keras, 1.5 if p == "fp32" else 5)
        for layout in layouts[1:]:
            ratio = e2e[p] / results[f"{p} scoring run, {layout}"]
            print(f"  {p} scoring run, {layouts[0]} / {layout}: {ratio:.2f}")
        aligned = results.get(f"{p} scoring run, {layouts[0]}, faces align")
        if aligned:
            line(f"{p} scoring run, faces align / faces off", aligned / e2e[p], 0.8)
    if len(precisions) == 2:
        line("int8 scoring run / fp32 scoring run", e2e["int8"] / e2e["fp32"], 2)
        c = {
            p: max(v for k, v in results.items() if k.startswith(f"{p} ceiling"))
            for p in precisions
        }
        line("int8 ceiling / fp32 ceiling", c["int8"] / c["fp32"], 2)


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


def build_models(folder: Path, size: int, precision: str, data: Path) -> list[str]:
    """Random-weight Keras models converted to ONNX (cached in ``folder``); ``int8``: as
    ``genderscore convert --int8 --int8-format auto`` writes them (int8 only where it pays)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "" if precision == "fp32" else "_int8"
    onnx_paths = [str(folder / f"{b}_{size}{suffix}.onnx") for b in BACKBONES]
    if all(Path(p).is_file() for p in onnx_paths):
        return onnx_paths
    # Random weights make the int8 gate meaningless (constant outputs): force past it.
    int8 = (
        f", int8=True, int8_format='auto', calibration={str(data / 'utkface' / 'val')!r},"
        f" calibration_limit={CALIBRATION_IMAGES}, force=True"
        if precision == "int8"
        else ""
    )
    code = f"""
import logging, warnings
from pathlib import Path
logging.basicConfig(level=logging.WARNING)
warnings.simplefilter("ignore")
from models.build import build_model
from models.registry import get_backbone
from convert.converter import convert_model
for b in {BACKBONES!r}:
    keras_path = {str(folder)!r} + f"/{{b}}_{size}.keras"
    if not Path(keras_path).is_file():
        build_model(b, {size}, weights="none").save(keras_path)
    r = convert_model(keras_path, {str(folder)!r} + f"/{{b}}_{size}{suffix}.onnx",
        preprocess=get_backbone(b).preprocessing, class_names=("female", "male"),
        positive="male", name=b{int8})
    print("built", b, "{precision}", r.int8 and r.int8.get("speed_img_per_s"),
          r.int8 and r.int8.get("chosen"), flush=True)
"""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=_quiet_env())
    print(f"built and converted the {precision} models in {time.perf_counter() - t0:.0f} s")
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


def ceilings(onnx_paths: list[str], images: np.ndarray, cpus: int) -> dict[str, float]:
    """Both ceiling layouts, img/s."""
    return {
        "ceiling, 1 process x all threads": ceiling_threads(onnx_paths, images, cpus),
        "ceiling, 1 thread x 1 process per CPU": ceiling_processes(onnx_paths, images, cpus),
    }


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


def scoring_run(
    onnx_paths: list[str], manifest: Path, work: Path, layout: str, faces: str | None = None
) -> float:
    """``score_manifest`` end to end, img/s; ``layout`` 'default' or 'WxT' (actors x threads);
    ``faces``: the framing for every model (default: their own, off here)."""
    from scoring.run import score_manifest

    options: dict[str, int | str] = {"faces": faces} if faces else {}
    if layout != "default":
        workers, threads = (int(x) for x in layout.split("x"))
        options |= {"num_workers": workers, "worker_threads": threads}
    out = work / "scores"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with CpuByProcess() as cpu:
        result = score_manifest(manifest, models=onnx_paths, out=out, progress=False, **options)
    seconds = time.perf_counter() - t0
    s = result.summary
    print(
        f"scoring run ({layout}{', faces ' + faces if faces else ''}): {s['rows']} rows ({s['rows_by_status']}) in {seconds:.1f} s, "
        f"pipeline {s['pipeline_time_s']:.1f} s ({s['rows'] / s['pipeline_time_s']:.1f} img/s "
        f"without Ray start and stop), {s['ray']['workers']} workers x "
        f"{s['ray']['worker_threads']} thread(s)",
        flush=True,
    )
    print(f"  CPU seconds by process (of {seconds * (os.cpu_count() or 1):.0f} available): {cpu}")
    return s["rows"] / seconds


class CpuByProcess:
    """CPU seconds used by this process and its descendants (Ray's GCS, raylet, workers and
    actors), summed by kind of process: where the cores went during a scoring run. Without
    psutil it reports nothing."""

    def __init__(self, every: float = 0.5):
        self.every = every
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuByProcess:
        try:
            import psutil
        except ImportError:
            return self
        self._psutil = psutil
        self.me = psutil.Process()
        self.start = sum(self.me.cpu_times()[:2])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        while True:
            for p in self.me.children(recursive=True):
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        name = p.cmdline()
                    self.last[p.pid] = (_kind(name), t.user + t.system)
                except self._psutil.Error:
                    continue
            self.last[0] = ("driver", sum(self.me.cpu_times()[:2]) - self.start)
            if self._stop.wait(self.every):
                return

    def __str__(self) -> str:
        by: dict[str, float] = {}
        for kind, seconds in self.last.values():
            by[kind] = by.get(kind, 0.0) + seconds
        top = sorted(by.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {v:.1f}" for k, v in top if v >= 0.5) or "(psutil not installed)"


def _kind(cmdline: list[str]) -> str:
    if not cmdline:
        return "?"
    if cmdline[0].startswith("ray::"):
        return cmdline[0].split("(")[0].split(".")[0]
    for arg in cmdline[:3]:
        name = os.path.basename(arg)
        if name in ("raylet", "gcs_server") or name.endswith(".py"):
            return name
    return os.path.basename(cmdline[0])


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
