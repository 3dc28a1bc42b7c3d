"""benchmarks/bench_scoring.py's pure pieces: the repeated manifest, the kinds of process and
the JSON record's targets (no timing here)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scoring.py"
sys.path.insert(0, str(SCRIPT.parent))  # as when run as a script: its helpers sit beside it
spec = importlib.util.spec_from_file_location("bench_scoring", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_repeat_to_cycles_from_the_start() -> None:
    assert bench.repeat_to(["a", "b", "c"], 7) == ["a", "b", "c", "a", "b", "c", "a"]
    assert bench.repeat_to(["a", "b", "c"], 2) == ["a", "b"]


def test_pick_images_repeats_past_the_files_and_the_manifest_lists_them(tmp_path: Path) -> None:
    for folder, n in [("utkface/train/female", 3), ("utkface/train/male", 3)]:
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            (tmp_path / folder / f"{i}.jpg").write_bytes(b"")
    paths = bench.pick_images(tmp_path, 10)
    assert len(paths) == 10 and len(set(paths)) == 6 and paths[6:] == paths[:4]
    assert len(set(bench.pick_images(tmp_path, 10, distinct=4))) == 4
    manifest = bench.write_manifest(tmp_path / "m.csv", paths)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == paths
    assert {r["label"] for r in rows} == {"female", "male"}


def test_images_below_the_minimum_are_refused() -> None:
    assert bench.parse_args(["--images", "20000", "2000"]).images == [2000, 20000]
    with pytest.raises(SystemExit):
        bench.parse_args(["--images", "1000"])


@pytest.mark.parametrize(
    ("kind", "group"),
    [
        ("ray::MapWorker", "scorer actors"),
        ("ray::ReadParquet", "read/write task workers"),
        ("ray::Write", "read/write task workers"),
        ("ray::IDLE", "read/write task workers"),
        ("ray::_StatsActor", "other Ray actors"),
        ("ray::ActorLocationTracker", "other Ray actors"),
        ("ray::DashboardAgent", "Ray system processes"),
        ("raylet", "Ray system processes"),
        ("log_monitor.py", "Ray system processes"),
        ("driver", "driver"),
    ],
)
def test_group(kind: str, group: str) -> None:
    assert bench._group(kind) == group


def _run(images: int, faces: str, img_per_s: float, ceiling: float) -> dict:
    return {
        "images": images,
        "faces": faces,
        "layout": "default",
        "img_per_s": img_per_s,
        "ratio_to_ceiling": img_per_s / ceiling,
        "ray_start_s": 2.0,
        "ray_stop_s": 1.0,
    }


def test_targets() -> None:
    measured = {
        p: {
            "ceiling": {"img_per_s": c},
            "plain_loop": {"images": 2000, "img_per_s": 0.95 * c},
            "runs": [
                _run(n, f, k * c, c)
                for n in (2000, 20000)
                for f, k in [("off", 0.9), ("align", 0.7)]
            ],
        }
        for p, c in [("fp32", 40.0), ("int8", 100.0)]
    }
    got = {t["name"]: t for t in bench.targets(measured, {"img_per_s": 20.0}, "default")}
    assert got["fp32 end to end / ceiling, 20000"]["met"]
    assert got["int8 Ray start + stop (s), 2000"]["value"] == 3.0
    align = got["fp32 faces align / off, 20000"]
    assert align["value"] == pytest.approx(0.7 / 0.9) and not align["met"]
    assert got["int8 / fp32 end to end, 20000"]["value"] == pytest.approx(2.5)
    assert got["fp32 end to end / Keras (fp32), 2000"]["value"] == pytest.approx(1.8)
    assert not got["int8 end to end / Keras (fp32), 2000"]["met"]  # 4.5 < 5
