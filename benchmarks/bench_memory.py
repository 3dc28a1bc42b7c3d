"""Peak memory of a scoring run against the manifest's size: does it stay flat with rows?

    python benchmarks/bench_memory.py [--rows 100000 1000000] [--size 32] [--unique 2000]
        [--stage-only] [--work /tmp/bench_memory]   (needs psutil: pip install psutil)

The run is about the pipeline and its memory, not compute: one tiny model (MobileNetV2, the
smallest real backbone, at ``--size`` px, random weights, converted with ``convert``) over
tiny JPEGs (``--unique`` UTKFace faces from ``../shared/data`` shrunk to 48x48, written to the
work folder), repeated to fill a CSV manifest of each ``--rows`` count. Each count runs
``scoring.run.score_manifest`` (defaults: local Ray started and stopped by the run) in a fresh
subprocess, which samples its own process tree with psutil (the driver, and Ray's GCS,
raylet, workers and actors, all its descendants):

- RSS, every 0.25 s: the sum over processes of resident memory. Shared pages (libraries,
  Ray's plasma object store, which is shared memory mapped by the raylet and every worker that
  touches an object) are counted once per process that maps them: an upper bound;
- PSS, every second: the sum of proportional set sizes, where a page shared by k processes
  counts 1/k in each: shared memory, plasma included, is counted once. This is the figure to
  hold against the 4 GiB target;
- the driver's own RSS (manifest staging and the commit's row check run there).

``--stage-only`` times and measures only the driver's manifest staging (no Ray, no scoring),
for row counts too large to score in the time at hand. Printed: one line per count with wall
time, rows/s, peak RSS sum, peak PSS sum, peak driver RSS and the peak process count; then
the largest count's peak PSS against the smallest's (flat = about 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from proctree import Background, process_kind  # beside this script

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GIB = 2**30
TARGET_GIB = 4.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--size", type=int, default=32, help="model input size in pixels (>= 32)")
    ap.add_argument("--unique", type=int, default=2000, help="distinct tiny images")
    ap.add_argument(
        "--models", nargs="+", default=None, help="score with these ONNX models instead (real ones)"
    )
    ap.add_argument("--batch-size", type=int, default=None, help="scorer batch (default: its)")
    ap.add_argument("--stage-only", action="store_true", help="only the driver's staging")
    ap.add_argument(
        "--object-store-mb",
        type=int,
        default=None,
        help="start Ray with this object store size (default: Ray's, 30%% of RAM)",
    )
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_memory"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one measured run
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        print(json.dumps(measure_one(args)))
        return
    images = tiny_images(args.data, args.work / "images", args.unique)
    model = None if args.stage_only else tiny_model(args.work / "models", args.size)
    if args.models:
        model = " ".join(args.models)
    print(
        f"{len(images)} distinct 48x48 JPEGs, model {model or '-'}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    results = []
    for rows in args.rows:
        write_manifest(args.work / f"manifest_{rows}.csv", images, rows)
        cmd = [sys.executable, __file__, "--one", str(rows), "--work", str(args.work)]
        cmd += ["--size", str(args.size)] + (["--stage-only"] if args.stage_only else [])
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        if args.models:
            cmd += ["--models", *args.models]
        if args.object_store_mb:
            cmd += ["--object-store-mb", str(args.object_store_mb)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=_env())
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(
            f"{r['what']:<13} {rows:>9,} rows  {r['wall_s']:8.1f} s  {rows / r['wall_s']:8.0f} rows/s"
            f"  peak RSS sum {r['peak_rss'] / GIB:5.2f} GiB  peak PSS sum "
            f"{r['peak_pss'] / GIB:5.2f} GiB  driver {r['peak_driver_rss'] / GIB:5.2f} GiB  "
            f"{r['max_processes']} processes  load {r['load_end']:.2f}",
            flush=True,
        )
        thirds = " / ".join(f"{x / GIB:.2f}" for x in r["peak_pss_by_third"])
        kinds = ", ".join(
            f"{k} {v / GIB:.2f}" for k, v in r["peak_pss_by_process_kind"].items() if v > 2**25
        )
        print(f"    peak PSS by third of the run {thirds} GiB; at the peak (> 32 MiB): {kinds}")
    first, last = results[0], results[-1]
    print(
        f"\npeak PSS {last['rows']:,} rows / {first['rows']:,} rows = "
        f"{last['peak_pss'] / first['peak_pss']:.2f} (flat: ~1.0); peak RSS sum ratio "
        f"{last['peak_rss'] / first['peak_rss']:.2f}; driver ratio "
        f"{last['peak_driver_rss'] / first['peak_driver_rss']:.2f}; "
        f"largest peak PSS {last['peak_pss'] / GIB:.2f} GiB (target <= {TARGET_GIB} GiB)"
    )
    (args.work / "results.json").write_text(json.dumps(results, indent=2))


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}


# --- inputs --------------------------------------------------------------------------------


def tiny_images(data: Path, folder: Path, n: int) -> list[str]:
    """``n`` UTKFace faces shrunk to 48x48 JPEGs in ``folder`` (made once)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    done = sorted(str(p) for p in folder.glob("*.jpg"))
    if len(done) >= n:
        return done[:n]
    sources = (
        sorted((data / "utkface" / "train" / "female").glob("*.jpg"))[: n // 2]
        + sorted((data / "utkface" / "train" / "male").glob("*.jpg"))[: n - n // 2]
    )
    out = []
    for i, src in enumerate(sources):
        dest = folder / f"{i:06d}.jpg"
        with Image.open(src) as img:
            img.convert("RGB").resize((48, 48), Image.Resampling.BILINEAR).save(dest, quality=90)
        out.append(str(dest))
    return out


def write_manifest(path: Path, images: list[str], rows: int) -> None:
    """A CSV manifest of ``rows`` rows cycling through ``images`` (absolute paths)."""
    if path.is_file():
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write("path\n")
        k = len(images)
        block = "".join(p + "\n" for p in images)
        full, rest = divmod(rows, k)
        for _ in range(full):
            fh.write(block)
        fh.write("".join(p + "\n" for p in images[:rest]))
    tmp.rename(path)


def tiny_model(folder: Path, size: int) -> str:
    """MobileNetV2 at ``size`` px, random weights, converted to ONNX (cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"mobilenetv2_{size}.onnx"
    if onnx_path.is_file():
        return str(onnx_path)
    keras_path = folder / f"mobilenetv2_{size}.keras"
    code = f"""
from models.build import build_model
from convert.converter import convert_model
build_model("mobilenetv2", {size}, weights="none").save({str(keras_path)!r})
convert_model({str(keras_path)!r}, {str(onnx_path)!r}, preprocess="mobilenet_v2",
    class_names=("female", "male"), positive="male", name="tiny")
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=_env())
    return str(onnx_path)


# --- one measured run (in its own process) ---------------------------------------------------


class TreeSampler(Background):
    """Samples this process and all its descendants: peak summed RSS and PSS, driver RSS."""

    def __init__(self, rss_every: float = 0.25, pss_every: float = 1.0):
        import psutil

        self._psutil = psutil
        self.me = psutil.Process()
        self.rss_every = rss_every
        self.pss_every = pss_every
        self.peak_rss = self.peak_pss = self.peak_driver_rss = 0
        self.max_processes = 0
        self.timeline: list[tuple[float, int, int]] = []  # (t, rss sum, last pss sum)
        self.peak_groups: dict[str, int] = {}  # PSS by kind of process at the PSS peak
        super().__init__()

    def __enter__(self) -> TreeSampler:
        self.t0 = time.perf_counter()
        return super().__enter__()

    def _run(self) -> None:
        psutil = self._psutil
        next_pss = 0.0
        pss = 0
        while not self._stop.is_set():
            now = time.perf_counter()
            procs = [self.me]
            try:
                procs += self.me.children(recursive=True)
            except psutil.Error:
                pass
            rss = 0
            want_pss = now >= next_pss
            pss_now = 0
            groups: dict[str, int] = {}
            for p in procs:
                try:
                    if want_pss:
                        info = p.memory_full_info()
                        pss_now += info.pss
                        kind = "driver" if p.pid == self.me.pid else process_kind(p.cmdline())
                        groups[kind] = groups.get(kind, 0) + info.pss
                    else:
                        info = p.memory_info()
                    rss += info.rss
                    if p.pid == self.me.pid:
                        self.peak_driver_rss = max(self.peak_driver_rss, info.rss)
                except psutil.Error:  # a process that ended between listing and reading
                    continue
            if want_pss:
                pss = pss_now
                if pss > self.peak_pss:
                    self.peak_pss = pss
                    self.peak_groups = groups
                next_pss = now + self.pss_every
            self.peak_rss = max(self.peak_rss, rss)
            self.max_processes = max(self.max_processes, len(procs))
            self.timeline.append((round(now - self.t0, 2), rss, pss))
            self._stop.wait(self.rss_every)


def measure_one(args: argparse.Namespace) -> dict[str, object]:
    rows = args.one
    manifest = args.work / f"manifest_{rows}.csv"
    out = args.work / f"scores_{rows}"
    shutil.rmtree(out, ignore_errors=True)
    with TreeSampler() as sampler:
        t0 = time.perf_counter()
        if args.stage_only:
            from scoring.manifest import ManifestColumns, stage_manifest

            staged = stage_manifest(manifest, out, ManifestColumns(), rows_per_part=4096)
            assert staged.rows == rows
            what = "staging only"
        else:
            from scoring.run import score_manifest

            options = {"batch_size": args.batch_size} if args.batch_size else {}
            if args.object_store_mb:
                # The scorer uses a Ray already running in the process: start it as the
                # scorer would, with the object store size under test.
                import logging

                import ray

                ray.init(
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    object_store_memory=args.object_store_mb * 2**20,
                )
            models = args.models or [str(args.work / "models" / f"mobilenetv2_{args.size}.onnx")]
            result = score_manifest(manifest, models=models, out=out, progress=False, **options)
            assert result.summary["rows"] == rows, result.summary["rows"]
            assert result.summary["rows_by_status"].get("ok") == rows
            what = "scoring run"
            if args.object_store_mb:
                ray.shutdown()
        wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    # The PSS peak in each third of the run: memory that grows with rows grows in time.
    tl = [t for t in sampler.timeline if t[2]]
    thirds = [tl[i * len(tl) // 3 : (i + 1) * len(tl) // 3] for i in range(3)]
    return {
        "what": what,
        "rows": rows,
        "wall_s": wall,
        "peak_rss": sampler.peak_rss,
        "peak_pss": sampler.peak_pss,
        "peak_driver_rss": sampler.peak_driver_rss,
        "max_processes": sampler.max_processes,
        "peak_pss_by_third": [max((t[2] for t in third), default=0) for third in thirds],
        "peak_pss_by_process_kind": dict(sorted(sampler.peak_groups.items())),
        "load_end": os.getloadavg()[0],
    }


if __name__ == "__main__":
    main()
