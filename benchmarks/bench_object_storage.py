"""Scoring speed with the images on a local S3 server against the same run on local disk.

    python benchmarks/bench_object_storage.py [--images 2000] [--size 224] [--repeats 1]
        [--backbones mobilenetv2 efficientnetb0 resnet50] [--work /tmp/bench_object_storage]

``--images`` face photos from ``../shared/data`` (UTKFace 200x200 and FACECOM 250x250 JPEGs,
mixed, as ``bench_scoring.py`` picks them) are scored by the random-weight fp32 models
``bench_scoring.py`` builds (``--backbones``: MobileNetV2, EfficientNetB0, ResNet50 at
``--size``; fewer models make the reading of the images a larger share of the time), with
``scoring.nightly.run_nightly`` end to end (Ray start, staging, decode, ONNX Runtime actors,
Parquet, commit, Ray shutdown), default settings, a fresh output each time:

- ``local``: manifest, images and output on local disk (the baseline);
- ``s3 images``: the same images on the S3 server, the manifest (local) naming their
  ``s3://`` URIs, output local;
- ``s3 all``: manifest, images and output on the S3 server.

The server is moto (``moto[server]``) in its own process on 127.0.0.1: an in-memory Python
server on the same cores as the scoring, so its CPU time is taken from the scorer, where a
remote store's is not; its round trip is shorter than a real store's. Printed: img/s of each
run (median of ``--repeats``, the kinds taking turns so that a change of the machine's load
falls on each), the ratio to the baseline, and the machine's load average at the start and the
end (on a shared machine compare ratios, not absolute figures).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_scoring import BACKBONES, DATA, build_models, pick_images  # noqa: E402

BUCKET = "bench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="images to score")
    ap.add_argument("--size", type=int, default=224, help="model input size in pixels")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared face data folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_object_storage"))
    ap.add_argument("--repeats", type=int, default=1, help="runs of each kind (median)")
    ap.add_argument(
        "--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES, help="models"
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    paths = pick_images(args.data, args.images)
    built = build_models(args.work / "models", args.size, "fp32", args.data)
    models = [m for b, m in zip(BACKBONES, built, strict=True) if b in args.backbones]
    server, endpoint = start_moto()
    try:
        storage = [f"endpoint_override={endpoint}"]
        s3_paths = upload(paths, endpoint)
        local_manifest = write_manifest(args.work / "local.csv", paths)
        s3_manifest = write_manifest(args.work / "s3.csv", s3_paths)
        put(endpoint, f"{BUCKET}/manifests/s3.csv", s3_manifest.read_bytes())
        runs = {
            "local": (str(local_manifest), str(args.work / "out"), []),
            "s3 images": (str(s3_manifest), str(args.work / "out"), storage),
            "s3 all": (f"s3://{BUCKET}/manifests/s3.csv", f"s3://{BUCKET}/out", storage),
        }
        figures: dict[str, list[float]] = {name: [] for name in runs}
        for repeat in range(args.repeats):
            for name, (manifest, out, options) in runs.items():
                figures[name].append(score(name, manifest, out, options, repeat, models))
    finally:
        server.terminate()
        server.wait(timeout=30)
    load_end = os.getloadavg()
    base = statistics.median(figures["local"])
    print(f"\nimages: {args.images}, models: {', '.join(args.backbones)} (fp32, {args.size} px), "
          f"repeats: {args.repeats}")  # fmt: skip
    for name, values in figures.items():
        med = statistics.median(values)
        print(f"  {name:10s} {med:7.1f} img/s  ({med / base:.2f} x local)  runs: "
              + ", ".join(f"{v:.1f}" for v in values))  # fmt: skip
    print(f"load average (1/5/15 min): start {_load(load_start)}, end {_load(load_end)}")


def score(name: str, manifest: str, out: str, options: list[str], repeat: int, models) -> float:
    """One end-to-end run into a fresh date; img/s over its wall time."""
    from scoring.nightly import run_nightly

    if "://" not in out:
        shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = run_nightly(
        manifest,
        models=models,
        out=out,
        run_date=f"2026-01-{repeat + 1:02d}",
        storage_options=options,
        progress=False,
        force=True,
    )
    seconds = time.perf_counter() - t0
    s = result.summary
    print(
        f"{name}: {s['rows']} rows ({s['rows_by_status']}) in {seconds:.1f} s, pipeline "
        f"{s['pipeline_time_s']:.1f} s ({s['rows'] / s['pipeline_time_s']:.1f} img/s without "
        f"Ray start and stop) -> {result.out}",
        flush=True,
    )
    if s["rows_by_status"].get("ok") != s["rows"]:
        raise SystemExit(f"{name}: not every row was scored ok: {s['errors_by_code']}")
    return s["rows"] / seconds


def start_moto() -> tuple[subprocess.Popen, str]:
    """``python -m moto.server`` on a free loopback port, ready to answer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("the moto server did not start")


def _filesystem(endpoint: str):
    from pyarrow import fs as pafs

    return pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True)


def put(endpoint: str, path: str, data: bytes) -> None:
    with _filesystem(endpoint).open_output_stream(path, compression=None) as fh:
        fh.write(data)


def upload(paths: list[str], endpoint: str) -> list[str]:
    """The images under ``s3://bench/images/``, in the same order."""
    from concurrent.futures import ThreadPoolExecutor

    _filesystem(endpoint).create_dir(BUCKET)
    keys = [f"{BUCKET}/images/{i:05d}-{Path(p).name}" for i, p in enumerate(paths)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda kp: put(endpoint, kp[0], Path(kp[1]).read_bytes()),
                zip(keys, paths, strict=True),
            )
        )
    print(f"uploaded {len(keys)} images to {endpoint} in {time.perf_counter() - t0:.1f} s")
    return [f"s3://{k}" for k in keys]


def write_manifest(path: Path, images: list[str]) -> Path:
    path.write_text("path\n" + "".join(f"{p}\n" for p in images))
    return path


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    # The S3 server gets fake credentials; nothing here may reach a real AWS endpoint.
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    main()
