"""End-to-end scoring speed at 2,000 and 20,000 images against its ceiling and two baselines,
fp32 and int8, in one run.

    python benchmarks/bench_scoring.py [--images 2000 20000] [--size 224]
        [--precisions fp32 int8] [--layouts default 1x1 1x2] [--faces off align]
        [--ceiling-images 512] [--distinct N] [--data ../shared/data]
        [--work /tmp/bench_scoring] [--json FILE] [--skip-keras] [--skip-plain]

Three models (MobileNetV2, EfficientNetB0, ResNet50; random weights; built with
``models.build`` and converted with ``convert``; ``int8``: converted with ``--int8
--int8-format auto``, calibrated on 16 UTKFace val images, so EfficientNetB0 stays fp32 when
int8 does not pay) score face photos from ``../shared/data`` (UTKFace 200x200 and FACECOM
250x250 JPEGs, mixed; 17,926 distinct files). Each ``--images`` count (>= 2000) is its own
manifest: the first N of one fixed order of the files, the files repeated from the start when
N exceeds them (``--distinct``: at most that many distinct files); a manifest may list a path
several times, rows are distinct by row. Printed, per precision:

- the ceiling (a): the same ORT sessions over pre-decoded tensors, no I/O; measured both as
  one process with all cores and as one single-thread process per core (the scorer's
  layout), before and after the precision's scoring runs (the mean of the two, so that a
  change in the machine's load during the run shows and evens out); the better layout is the
  ceiling, and every figure below is printed with its ratio to it;
- per count, ``scoring run``: ``scoring.run.score_manifest`` end to end (staging, Ray start,
  decode, ONNX Runtime actors, Parquet, Ray stop, commit), default settings, once per
  ``--layouts`` entry (``WxT``: W actors x T ORT threads), and with ``--faces off align``
  once more on the first layout with every model's input the aligned face (detection and
  alignment in the scorer actors; its ratio to the ``off`` run is the cost of face framing).
  For each: img/s; Ray start (``ray.init`` until Ray is up; Ray's import, paid once per
  process, apart) and Ray stop (``ray.shutdown``), timed by wrapping ``scoring.run``'s
  ``ray_session`` here; the time to the first scored batch (from the call until a scorer
  actor's tally file counts rows, polled); img/s without Ray start and stop; the pipeline's
  own img/s (the summary's ``pipeline_time_s``); CPU seconds by kind of process (scorer
  actors, which read, decode and score; read/write task workers; other Ray actors; Ray's
  system processes; the driver; sampled with psutil);
- at the smallest count only: the plain loop (b), one process, read + decode + three sessions
  + Parquet, no Ray; and the Keras baseline (c), the seed's way (fp32 Keras, whatever the
  precision): images loaded, then ``model.predict`` per Keras model.

Keras and the conversion run in subprocesses so the timed ORT processes never load TensorFlow.
Targets (issue 16): end to end >= 0.9 x the ceiling in fp32 and int8 at 20,000 images (shown
for every count); Ray start + stop <= 5 s; face framing ``align`` costing at most 20% of the
throughput (align / off >= 0.8). Issue 7's aims are shown too (Ray's overhead over the plain
loop <= 10%; >= 1.5 x Keras in fp32, >= 5 x in int8; int8 >= 2 x fp32). The machine's load
average is printed at the start and the end: on a shared machine compare ratios, not absolute
figures. ``--json FILE`` writes every figure and ratio as one JSON object (stable keys: see
``build_record``), with the command line, the date, the load averages and the CPU model and
flags; ``WORK/results.json`` always gets the same object.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing as mp
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from proctree import Background, process_kind  # beside this script

REPO = Path(__file__).resolve().parents[1]
#: ../shared/data beside the checkout (a worktree under wt/: two levels up)
DATA = next(
    (
        p
        for p in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data")
        if p.is_dir()
    ),
    REPO.parent / "shared" / "data",
)
BACKBONES = ("mobilenetv2", "efficientnetb0", "resnet50")
BATCH = 16  # the scorer's default batch size
CALIBRATION_IMAGES = 16
MIN_IMAGES = 2000
CEILING_LAYOUTS = {
    "threads": "1 process x all threads",
    "processes": "1 thread x 1 process per CPU",
}
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--images",
        type=int,
        nargs="+",
        default=[MIN_IMAGES],
        help=f"image counts to score, one manifest each (each >= {MIN_IMAGES}), e.g. 2000 20000",
    )
    ap.add_argument("--size", type=int, default=224, help="model input size in pixels")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared face data folder")
    ap.add_argument(
        "--distinct", type=int, default=None, help="at most this many distinct files (repeated)"
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_scoring"), help="work folder")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here as JSON")
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
        help="face framings of the first layout's scoring runs (off and align: framing's cost)",
    )
    ap.add_argument("--skip-keras", action="store_true", help="leave out the Keras baseline")
    ap.add_argument("--skip-plain", action="store_true", help="leave out the plain loop")
    args = ap.parse_args(argv)
    if min(args.images) < MIN_IMAGES:
        ap.error(f"--images: each count must be at least {MIN_IMAGES}, got {args.images}")
    if args.distinct is not None and args.distinct < 1:
        ap.error("--distinct must be at least 1")
    args.images = sorted(set(args.images))
    return args


def main() -> None:
    args = parse_args()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    args.work.mkdir(parents=True, exist_ok=True)
    paths = pick_images(args.data, max(args.images), args.distinct)
    manifests = {n: write_manifest(args.work / f"manifest_{n}.csv", paths[:n]) for n in args.images}
    models = {
        p: build_models(args.work / "models", args.size, p, args.data) for p in args.precisions
    }
    cpus = os.cpu_count() or 1
    machine = machine_info(cpus)
    load_start = os.getloadavg()
    print(
        f"{', '.join(map(str, args.images))} images ({len(set(paths))} distinct files), "
        f"{args.size} px, models {', '.join(BACKBONES)}, {cpus} CPUs ({machine['model']}; "
        f"{' '.join(f for f, on in machine['flags'].items() if on) or 'no AVX2'})"
    )
    print(f"load average at start: {_load(load_start)}", flush=True)
    images = decode_all(paths[: args.ceiling_images], args.size)
    small = paths[: args.images[0]]
    measured = {
        p: measure_precision(args, onnx_paths, manifests, small, images, cpus)
        for p, onnx_paths in models.items()
    }
    keras = None
    if not args.skip_keras:
        keras = {"images": len(small), "img_per_s": keras_baseline(args.work, small, args.size)}
    load_end = os.getloadavg()
    record = build_record(
        args, date, machine, (load_start, load_end), len(set(paths)), measured, keras
    )
    report(record)
    text = json.dumps(record, indent=2)
    (args.work / "results.json").write_text(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        print(f"wrote {args.json}")


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load) + " (1, 5, 15 min)"


def machine_info(cpus: int) -> dict[str, Any]:
    """The CPU model and the instruction-set flags that decide ORT's kernels (lscpu)."""
    model, flags = "unknown", set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model = value.strip()
        elif key.strip() == "Flags":
            flags = set(value.split())
    return {"cpus": cpus, "model": model, "flags": {f: f in flags for f in CPU_FLAGS}}


def measure_precision(
    args: argparse.Namespace,
    onnx_paths: list[str],
    manifests: dict[int, Path],
    small: list[str],
    images: np.ndarray,
    cpus: int,
) -> dict[str, Any]:
    """One precision: the ceilings before, the plain loop (smallest count), every scoring run
    (count x layout, then faces align), the ceilings after."""
    before = ceilings(onnx_paths, images, cpus)
    plain = None
    if not args.skip_plain:
        plain = {
            "images": len(small),
            "img_per_s": plain_loop(onnx_paths, small, args.size, cpus, args.work),
        }
    runs = []
    for manifest in manifests.values():
        for layout in args.layouts:
            runs.append(scoring_run(onnx_paths, manifest, args.work, layout))
        if "align" in args.faces:
            runs.append(scoring_run(onnx_paths, manifest, args.work, args.layouts[0], "align"))
    after = ceilings(onnx_paths, images, cpus)
    layouts = {
        k: {"before": before[k], "after": after[k], "mean": (before[k] + after[k]) / 2}
        for k in CEILING_LAYOUTS
    }
    best = max(layouts, key=lambda k: layouts[k]["mean"])
    ceiling = layouts[best]["mean"]
    for figures in [plain, *runs]:
        if figures is not None:
            figures["ratio_to_ceiling"] = figures["img_per_s"] / ceiling
    for run in runs:
        run["ratio_to_ceiling_without_ray_start_stop"] = (
            run["img_per_s_without_ray_start_stop"] / ceiling
        )
        run["ratio_to_ceiling_pipeline"] = run["img_per_s_pipeline"] / ceiling
    return {
        "ceiling": {"img_per_s": ceiling, "best_layout": best, "layouts": layouts},
        "plain_loop": plain,
        "runs": runs,
    }


def build_record(
    args: argparse.Namespace,
    date: str,
    machine: dict[str, Any],
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    distinct: int,
    measured: dict[str, dict[str, Any]],
    keras: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything measured as one JSON-ready object (its keys do not depend on the figures).

    ``precisions.<p>``: ``ceiling`` (``img_per_s``, ``best_layout``, ``layouts.<threads |
    processes>.<before | after | mean>``), ``plain_loop`` (or null) and ``runs``, one object
    per scoring run (``images``, ``faces``, ``layout``, the img/s, seconds and ratios, and
    ``cpu_s``); ``targets``: ``name``, ``issue``, ``value``, ``op``, ``target``, ``met``."""
    from models.versions import package_versions
    from scoring.run import SCORING_PACKAGES

    if keras is not None and "fp32" in measured:
        keras["ratio_to_fp32_ceiling"] = (
            keras["img_per_s"] / measured["fp32"]["ceiling"]["img_per_s"]
        )
    return {
        "date": date,
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine,
        "load_average": {"start": list(loads[0]), "end": list(loads[1])},
        "settings": {
            "images": args.images,
            "distinct_files": distinct,
            "size": args.size,
            "models": list(BACKBONES),
            "precisions": args.precisions,
            "layouts": args.layouts,
            "faces": args.faces,
            "ceiling_images": args.ceiling_images,
        },
        "versions": package_versions(SCORING_PACKAGES),
        "precisions": measured,
        "keras": keras,
        "ratios": other_ratios(measured, args.layouts),
        "targets": targets(measured, keras, args.layouts[0]),
    }


def find_run(runs: list[dict[str, Any]], images: int, layout: str, faces: str) -> dict[str, Any]:
    return next(
        r for r in runs if (r["images"], r["layout"], r["faces"]) == (images, layout, faces)
    )


def _target(name: str, issue: int, value: float, op: str, target: float) -> dict[str, Any]:
    met = value >= target if op == ">=" else value <= target
    return {"name": name, "issue": issue, "value": value, "op": op, "target": target, "met": met}


def targets(
    measured: dict[str, dict[str, Any]], keras: dict[str, Any] | None, layout0: str
) -> list[dict[str, Any]]:
    """Issue 16's targets (per count) and issue 7's, each as measured against its aim."""
    out = []
    for p, m in measured.items():
        runs = [r for r in m["runs"] if r["layout"] == layout0]
        for r in runs:
            n, e2e = r["images"], r["img_per_s"]
            if r["faces"] == "off":
                ray_s = r["ray_start_s"] + r["ray_stop_s"]
                out.append(
                    _target(f"{p} end to end / ceiling, {n}", 16, r["ratio_to_ceiling"], ">=", 0.9)
                )
                out.append(_target(f"{p} Ray start + stop (s), {n}", 16, ray_s, "<=", 5.0))
            else:
                off = find_run(runs, n, layout0, "off")["img_per_s"]
                out.append(_target(f"{p} faces {r['faces']} / off, {n}", 16, e2e / off, ">=", 0.8))
        first = find_run(runs, runs[0]["images"], layout0, "off")
        n0, e2e = first["images"], first["img_per_s"]
        if m["plain_loop"] is not None:
            overhead = m["plain_loop"]["img_per_s"] / e2e - 1
            name = f"{p} Ray overhead over the plain loop (time), {n0}"
            out.append(_target(name, 7, overhead, "<=", 0.1))
        if keras is not None:
            aim = 1.5 if p == "fp32" else 5.0
            out.append(
                _target(
                    f"{p} end to end / Keras (fp32), {n0}", 7, e2e / keras["img_per_s"], ">=", aim
                )
            )
    if {"fp32", "int8"} <= set(measured):
        fp32, int8 = measured["fp32"], measured["int8"]
        for r in int8["runs"]:
            if r["layout"] == layout0 and r["faces"] == "off":
                n = r["images"]
                ratio = r["img_per_s"] / find_run(fp32["runs"], n, layout0, "off")["img_per_s"]
                out.append(_target(f"int8 / fp32 end to end, {n}", 7, ratio, ">=", 2.0))
        ratio = int8["ceiling"]["img_per_s"] / fp32["ceiling"]["img_per_s"]
        out.append(_target("int8 / fp32 ceiling", 7, ratio, ">=", 2.0))
    return out


def other_ratios(measured: dict[str, dict[str, Any]], layouts: list[str]) -> list[dict[str, Any]]:
    """Ratios without an aim: the first layout against each other one, per count."""
    out = []
    for p, m in measured.items():
        for r in m["runs"]:
            if r["layout"] != layouts[0] and r["faces"] == "off":
                first = find_run(m["runs"], r["images"], layouts[0], "off")
                out.append(
                    {
                        "name": f"{p} {layouts[0]} / {r['layout']}, {r['images']} images",
                        "value": first["img_per_s"] / r["img_per_s"],
                    }
                )
    return out


# --- the printed report ------------------------------------------------------------------


def report(record: dict[str, Any]) -> None:
    """Every figure with its ratio to the ceiling, CPU by kind of process, then the targets."""
    x = "x ceil"
    print(
        f"\n{'run':<34} {'img/s':>7} {x:>6} {'w/o Ray':>7} {x:>6} {'pipeline':>8} {x:>6}"
        f" {'Ray start':>9} {'stop':>5} {'1st batch':>9} {'total':>7}"
    )
    for p, m in record["precisions"].items():
        c = m["ceiling"]
        layouts = "; ".join(
            f"{CEILING_LAYOUTS[k]}: {v['before']:.1f} before, {v['after']:.1f} after"
            for k, v in c["layouts"].items()
        )
        print(f"{p + ' ceiling':<34} {c['img_per_s']:7.1f} {1:6.2f}   ({layouts})")
        plain = m["plain_loop"]
        if plain is not None:
            name = f"{p} plain loop, {plain['images']}"
            print(f"{name:<34} {plain['img_per_s']:7.1f} {plain['ratio_to_ceiling']:6.2f}")
        for r in m["runs"]:
            print(
                f"{_run_name(p, r):<34} {r['img_per_s']:7.1f} {r['ratio_to_ceiling']:6.2f}"
                f" {r['img_per_s_without_ray_start_stop']:7.1f}"
                f" {r['ratio_to_ceiling_without_ray_start_stop']:6.2f}"
                f" {r['img_per_s_pipeline']:8.1f} {r['ratio_to_ceiling_pipeline']:6.2f}"
                f" {r['ray_start_s']:8.1f}s {r['ray_stop_s']:4.1f}s"
                f" {_seconds(r['first_batch_s']):>9} {r['seconds']:6.0f}s"
            )
    keras = record["keras"]
    if keras is not None:
        ratio = keras.get("ratio_to_fp32_ceiling")
        print(
            f"{'Keras baseline (fp32), ' + str(keras['images']):<34} {keras['img_per_s']:7.1f}"
            + (f" {ratio:6.2f} (of the fp32 ceiling)" if ratio is not None else "")
        )
    print("\nCPU seconds by kind of process (of the CPU seconds available):")
    for p, m in record["precisions"].items():
        for r in m["runs"]:
            cpu = r["cpu_s"]
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in cpu["by_kind"].items()) or "(no psutil)"
            print(f"  {_run_name(p, r)} (of {cpu['available']:.0f}): {kinds}")
    print("\ntargets (measured, aim, met?)")
    for t in record["targets"]:
        value = f"{t['value']:.1%}" if "overhead" in t["name"] else f"{t['value']:.2f}"
        aim = f"{t['target']:.0%}" if "overhead" in t["name"] else f"{t['target']:g}"
        met = "met" if t["met"] else "MISSED"
        print(f"  [issue {t['issue']:>2}] {t['name']:<56} {value:>7} {t['op']} {aim:<5} {met}")
    for r in record["ratios"]:
        print(f"  {r['name']:<67} {r['value']:7.2f}")
    loads = record["load_average"]
    print(f"\nload average at start: {_load(loads['start'])}; at the end: {_load(loads['end'])}")


def _run_name(precision: str, run: dict[str, Any]) -> str:
    return f"{precision} run, {run['images']}, {run['layout']}, faces {run['faces']}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


# --- inputs --------------------------------------------------------------------------------


def pick_images(data: Path, n: int, distinct: int | None = None) -> list[str]:
    """``n`` JPEGs alternating UTKFace (200x200) and FACECOM (250x250) photos, in a fixed order;
    the files repeated from the start when ``n`` exceeds them (or ``distinct``)."""
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
    if not out:
        raise SystemExit(f"no images under {data}")
    return repeat_to(out[:distinct], n)


def repeat_to(items: list[str], n: int) -> list[str]:
    """The first ``n`` of ``items`` repeated from the start as often as needed."""
    return list(itertools.islice(itertools.cycle(items), n))


def write_manifest(path: Path, images: list[str]) -> Path:
    """A manifest of ``images``, in order: a path may be listed several times."""
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
    """Both ceiling layouts (:data:`CEILING_LAYOUTS`), img/s."""
    return {
        "threads": ceiling_threads(onnx_paths, images, cpus),
        "processes": ceiling_processes(onnx_paths, images, cpus),
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


class RayTimer:
    """Times ``scoring.run``'s ``ray_session``: Ray's import (when this process has not
    imported it yet), its start (until the session yields) and its stop (the session's exit);
    ``up``: when Ray was up (perf_counter)."""

    def __init__(self) -> None:
        self.import_s = 0.0
        self.start_s = self.stop_s = float("nan")
        self.up: float | None = None

    @contextmanager
    def session(self, address: str | None) -> Iterator[str]:
        from scoring.internal import cluster

        t0 = time.perf_counter()
        if "ray" not in sys.modules:
            # as ray_session does before Ray reads its configuration (on import)
            if not address and cluster.AUTH_MODE_VARIABLE not in os.environ:
                os.environ[cluster.AUTH_MODE_VARIABLE] = "token"
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        t1 = time.perf_counter()
        self.import_s = t1 - t0
        with cluster.ray_session(address) as where:
            self.up = time.perf_counter()
            self.start_s = self.up - t1
            try:
                yield where
            finally:
                down = time.perf_counter()
        self.stop_s = time.perf_counter() - down


class FirstBatch(Background):
    """Polls the run's tally folder (``scoring.internal.tally``: each scorer actor counts its
    rows after every batch) for the first scored rows; ``at``: when seen (perf_counter)."""

    def __init__(self, out: Path, every: float = 0.1):
        from scoring.objectstore import open_layout

        layout = open_layout(out)
        self.staging, self.tally = layout.staging, layout.tally
        self.every = every
        self.at: float | None = None
        super().__init__()

    def _run(self) -> None:
        from scoring.internal.tally import read_tally

        while not self._stop.wait(self.every):
            if any(node["rows"] for node in read_tally(self.tally).values()):
                self.at = time.perf_counter()
                return


def scoring_run(
    onnx_paths: list[str], manifest: Path, work: Path, layout: str, faces: str | None = None
) -> dict[str, Any]:
    """``score_manifest`` end to end with its timings and CPU seconds; ``layout`` 'default' or
    'WxT' (actors x threads); ``faces``: the framing for every model (default: their own, off
    here)."""
    import scoring.run
    from scoring.run import score_manifest

    options: dict[str, int | str] = {"faces": faces} if faces else {}
    if layout != "default":
        workers, threads = (int(x) for x in layout.split("x"))
        options |= {"num_workers": workers, "worker_threads": threads}
    out = work / "scores"
    ray_timer, first = RayTimer(), FirstBatch(out)
    for folder in (out, first.staging):  # a stale staging folder of this job would resume
        shutil.rmtree(folder, ignore_errors=True)
    with mock.patch.object(scoring.run, "ray_session", ray_timer.session):
        t0 = time.perf_counter()
        with CpuByProcess() as cpu, first:
            result = score_manifest(manifest, models=onnx_paths, out=out, progress=False, **options)
        seconds = time.perf_counter() - t0
    s = result.summary
    rows, ray_s = s["rows"], ray_timer.start_s + ray_timer.stop_s
    run = {
        "images": rows,
        "faces": faces or "off",
        "layout": layout,
        "workers": s["ray"]["workers"],
        "worker_threads": s["ray"]["worker_threads"],
        "rows_by_status": s["rows_by_status"],
        "seconds": seconds,
        "img_per_s": rows / seconds,
        "ray_import_s": ray_timer.import_s,
        "ray_start_s": ray_timer.start_s,
        "ray_stop_s": ray_timer.stop_s,
        "img_per_s_without_ray_start_stop": rows / (seconds - ray_timer.import_s - ray_s),
        "pipeline_s": s["pipeline_time_s"],
        "img_per_s_pipeline": rows / s["pipeline_time_s"],
        "first_batch_s": None if first.at is None else first.at - t0,
        "first_batch_after_ray_start_s": (
            None if first.at is None or ray_timer.up is None else first.at - ray_timer.up
        ),
        "cpu_s": {"available": seconds * (os.cpu_count() or 1), **cpu.by_kind()},
    }
    print(
        f"{_run_name('', run).strip()}: {rows} rows ({s['rows_by_status']}) in {seconds:.1f} s,"
        f" {run['img_per_s']:.1f} img/s; Ray start {ray_timer.start_s:.1f} s (import"
        f" {ray_timer.import_s:.1f} s), stop {ray_timer.stop_s:.1f} s, first batch at"
        f" {_seconds(run['first_batch_s'])}; pipeline {s['pipeline_time_s']:.1f} s;"
        f" {run['workers']} workers x {run['worker_threads']} thread(s)",
        flush=True,
    )
    return run


class CpuByProcess(Background):
    """CPU seconds used by this process and its descendants (Ray's GCS, raylet, workers and
    actors), summed by kind of process: where the cores went during a scoring run. Without
    psutil it reports nothing."""

    def __init__(self, every: float = 0.5):
        self.every = every
        self.last: dict[int, tuple[str, float]] = {}
        super().__init__()

    def __enter__(self) -> CpuByProcess:
        try:
            import psutil
        except ImportError:
            return self  # no sampling thread: reports nothing
        self._psutil = psutil
        self.me = psutil.Process()
        self.start = sum(self.me.cpu_times()[:2])
        return super().__enter__()

    def _run(self) -> None:
        while True:
            for p in self.me.children(recursive=True):
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        name = p.cmdline()
                    self.last[p.pid] = (process_kind(name), t.user + t.system)
                except self._psutil.Error:
                    continue
            self.last[0] = ("driver", sum(self.me.cpu_times()[:2]) - self.start)
            if self._stop.wait(self.every):
                return

    def by_kind(self) -> dict[str, dict[str, float]]:
        """``by_kind``: seconds per :func:`_group`; ``by_process``: per :func:`_kind` (the
        process's name as last seen); both largest first."""
        by: dict[str, float] = {}
        for kind, seconds in self.last.values():
            by[kind] = by.get(kind, 0.0) + seconds
        groups: dict[str, float] = {}
        for kind, seconds in by.items():
            groups[_group(kind)] = groups.get(_group(kind), 0.0) + seconds
        return {"by_kind": _largest_first(groups), "by_process": _largest_first(by)}

    def __str__(self) -> str:
        top = self.by_kind()["by_process"]
        return ", ".join(f"{k} {v:.1f}" for k, v in top.items() if v >= 0.5) or "(no psutil)"


def _largest_first(seconds: dict[str, float]) -> dict[str, float]:
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def _group(kind: str) -> str:
    """The kind of process a :func:`_kind` name is: the scorer actors (Ray Data's only actor
    pool here: ``MapWorker``), the workers of the read and write tasks (idle ones
    too: a worker's name is its current task's), Ray's other actors (Ray Data's stats and
    autoscaling actors, its actor location tracker), the driver, and Ray's system processes
    (GCS, raylet, log monitor, its dashboard and runtime-env agents)."""
    if kind == "driver":
        return "driver"
    if kind.startswith("ray::MapWorker"):
        return "scorer actors"
    task_words = ("Read", "Write", "IDLE")
    if kind == "default_worker.py" or (
        kind.startswith("ray::") and any(w in kind for w in task_words)
    ):
        return "read/write task workers"
    if kind.startswith("ray::") and not kind.endswith("Agent"):
        return "other Ray actors"
    return "Ray system processes"


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
