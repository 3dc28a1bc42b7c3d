"""Faults during a scoring run on a real local Ray: a scorer actor's process killed mid-run,
an output folder that cannot be written, a full disk. Each ends in a complete output or one
clear error with nothing committed, and the rerun after the fault is fixed succeeds."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil
import pyarrow.parquet as pq
import pytest
from PIL import Image

from models.errors import GenderscoreError
from models.imageio import load_image
from scoring.internal.tally import scorer_actors
from scoring.layout import RunLayout
from scoring.manifest import ManifestColumns, stage_manifest
from scoring.run import score_manifest

#: As root, faults are made with mounts (root ignores permission bits); otherwise with chmod
#: and a file-size limit. Both make real writes fail in the kernel.
AS_ROOT = os.geteuid() == 0 and shutil.which("mount") is not None


def write_rows(
    folder: Path, n: int, name_len: int = 8, side: int = 40
) -> tuple[Path, list[str | None]]:
    """A manifest of ``n`` rows cycling over four real ``side`` px images and a missing file
    (whose name is ``name_len`` random characters long); returns it and each row's file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    files = []
    for i, ext in enumerate(("jpg", "png", "webp", "bmp")):
        arr = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
        path = folder / f"img{i}.{ext}"
        Image.fromarray(arr).resize((side, side - 4), Image.Resampling.BICUBIC).save(path)
        files.append(str(path))
    lines, expected = ["path"], []
    for i in range(n):
        if i % 5 == 4:
            lines.append("gone-" + "".join(rng.choice(list("abcdef0123456789"), name_len)) + ".jpg")
            expected.append(None)
        else:
            lines.append(Path(files[i % 5]).name)
            expected.append(files[i % 5])
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, expected


def check_complete(out: Path, expected: list[str | None], model: Path) -> None:
    """Every row exactly once, with its status, and each image's probability equal to a
    direct ONNX Runtime run on it."""
    table = pq.read_table(sorted(out.glob("part-*.parquet"))).sort_by("row")
    assert table["row"].to_pylist() == list(range(len(expected)))
    assert table["status"].to_pylist() == ["error" if f is None else "ok" for f in expected]
    assert table["error_code"].to_pylist() == ["not_found" if f is None else None for f in expected]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want = {
        f: session.run(["prob"], {"image": load_image(f, 48)[None]})[0][0]
        for f in set(expected) - {None}
    }
    got = table[f"p_{model.stem}"].to_numpy(zero_copy_only=False)
    for i, f in enumerate(expected):
        if f is not None:
            np.testing.assert_allclose(got[i], want[f], atol=1e-5)
    assert (out / "_SUCCESS").is_file()


def ray_workers() -> dict[int, str]:
    """pid -> process title of the worker processes of the Ray this test process started:
    the children of its raylet (another Ray on the machine is left alone). Found through the
    process tree, not Ray's private modules."""
    found = {}
    for raylet in psutil.Process().children(recursive=True):
        try:
            if raylet.name() != "raylet":
                continue
            children = raylet.children()
        except psutil.Error:
            continue
        for child in children:
            try:
                found[child.pid] = " ".join(child.cmdline()).strip()
            except psutil.Error:
                continue  # ended meanwhile
    return found


def busy_victims(layout: RunLayout, victims: dict[str, int], seen: set[str]) -> dict[str, int]:
    """The processes to kill now: a scorer actor that has scored rows (it reads and decodes
    its batches too), known by the pid it reports in the run's tally, and a worker running a
    write task. Ray has no public way (without its dashboard) to say which process runs a
    task, so the write task is known by the title Ray gives its worker process
    (``ray::Write``)."""
    found = {}
    if "scorer" not in victims:
        scorers = [a["pid"] for a in scorer_actors(layout.tally) if a["rows"] > 0]
        if scorers:
            found["scorer"] = scorers[0]
    if "writer" not in victims:
        for pid, title in ray_workers().items():
            seen.add(title)
            if title.startswith("ray::Write"):
                found["writer"] = pid
                break
    return found


def test_worker_processes_killed_mid_run_lose_no_row(ray_local, onnx_models, tmp_path):
    """SIGKILL the process of the scorer actor and of a write task while each is busy: Ray
    restarts the actor and retries the task; the run finishes with every row once."""
    # 1200 px images: the actor decoding its batch is caught at it; parts of 16 rows make
    # several write tasks to catch one of.
    manifest, expected = write_rows(tmp_path / "in", 96, side=1200)
    model = onnx_models["mobilenetv2"]
    out = tmp_path / "out"
    layout = RunLayout(out)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = score_manifest(
                manifest, models=[model], out=out, batch_size=2, rows_per_part=16,
                rows_per_file=16, num_workers=1, progress=False,
            )  # fmt: skip
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    victims: dict[str, int] = {}
    seen: set[str] = set()
    give_up = time.monotonic() + 600  # a safety net, not a speed check
    while len(victims) < 2 and thread.is_alive() and time.monotonic() < give_up:
        for kind, pid in busy_victims(layout, victims, seen).items():
            assert not layout.committed  # mid-run
            os.kill(pid, signal.SIGKILL)
            victims[kind] = pid
        time.sleep(0.01)
    thread.join(timeout=900)
    assert sorted(victims) == ["scorer", "writer"], f"workers seen: {sorted(seen)}"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].summary["rows"] == len(expected)
    assert not set(victims.values()) & set(ray_workers())
    check_complete(out, expected, model)


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """``folder`` cannot be written while inside: a read-only bind mount of itself as root,
    mode 555 otherwise. Leaving the block fixes it."""
    if AS_ROOT:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
            yield
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


def test_an_unwritable_output_folder_is_a_clear_failure(ray_local, onnx_models, tmp_path):
    manifest, expected = write_rows(tmp_path / "in", 10)
    model = onnx_models["mobilenetv2"]
    parent = tmp_path / "scores"
    parent.mkdir()
    out = parent / "run_date=2026-11-27"
    with unwritable(parent):
        with pytest.raises(
            GenderscoreError,
            match=r"(cannot write beside --out .*choose a folder|writing .* failed: .*Read-only "
            r"file system.*nothing was committed)",
        ):
            score_manifest(manifest, models=[model], out=out, num_workers=1, progress=False)
    assert list(parent.iterdir()) == []  # nothing half-committed, not even a lock
    result = score_manifest(manifest, models=[model], out=out, num_workers=1, progress=False)
    assert result.summary["attempts"] == 1
    check_complete(out, expected, model)


@contextmanager
def full_disk(folder: Path, free: int, how: str) -> Iterator[callable]:
    """Writes under ``folder`` run out of space: ``tmpfs`` mounts a small file system there
    and fills it with a ballast file but ``free`` bytes (every process's writes fail with
    ENOSPC, Ray's workers too); ``rlimit`` limits the size of files this process (the
    driver) writes to ``free`` bytes (EFBIG). Yields the fix (delete the ballast, lift
    the limit)."""
    folder.mkdir(parents=True, exist_ok=True)
    if how == "tmpfs":
        size = free + (1 << 20)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True
        )
        ballast = folder / "ballast"
        try:
            with open(ballast, "wb") as fh:
                fh.truncate(0)
                fh.write(b"\0" * (size - free))
            yield lambda: ballast.unlink()
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (free, old_limit[1]))

        def fix() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)

        try:
            yield fix
        finally:
            fix()
            signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"] if AS_ROOT else ["rlimit"])
def test_a_full_disk_is_a_clear_failure_and_the_rerun_resumes(
    ray_local, onnx_models, tmp_path, how, capsys
):
    manifest, expected = write_rows(tmp_path / "in", 120, name_len=120)
    model = onnx_models["mobilenetv2"]
    options = {"batch_size": 8, "rows_per_part": 40, "num_workers": 1, "progress": False}
    # tmpfs: room for the staged manifest and the run's state (a page), not for the scored
    # parts; rlimit: the staged manifest's parts (> 1 KB) cannot be written.
    staged = stage_manifest(manifest, tmp_path / "measure", ManifestColumns(), rows_per_part=40)
    pages = sum(-(-os.path.getsize(f) // 4096) for f in staged.files)
    free = (pages + 1) * 4096 if how == "tmpfs" else 1024
    disk = tmp_path / "disk"
    out = disk / "out"
    # The file-size limit also hits pytest's capture files (measured: the scoring run after
    # this one took 150 s instead of 12 when they were written past the limit).
    with capsys.disabled(), full_disk(disk, free, how) as fix:
        with pytest.raises(
            GenderscoreError, match=r"(No space left on device|File too large).*rerun"
        ) as err:
            score_manifest(manifest, models=[model], out=out, **options)
        assert "Traceback" not in str(err.value)
        assert not out.exists()  # nothing committed
        fix()
        result = score_manifest(manifest, models=[model], out=out, **options)
        assert result.summary["attempts"] == 2  # the same run, resumed
        check_complete(out, expected, model)
