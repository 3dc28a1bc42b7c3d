"""Issue 8's corpus of bad and unusual inputs: each case's outcome from the decoder the Ray
tasks run (fast, no Ray), then one scoring run over the whole corpus on a real local Ray with
the real ONNX models: zero rows lost, every row's status and error code."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_corpus import (
    ROTATED,
    encode,
    exif_jpeg,
    jpeg_claiming,
    png_claiming,
    smooth,
    write_bad_corpus,
    write_manifest,
)
from PIL import Image

from models.framing import Framing
from models.imageio import ErrorCode, decode_image, load_image
from scoring.decode import decode_paths, image_column, normalise_root
from scoring.manifest import resolve_path
from scoring.run import score_manifest

REPO = Path(__file__).resolve().parents[2]


def run_child(code: str) -> object:
    """Run ``code`` in a fresh Python; it may call ``drop_privileges()`` (to user nobody when
    root: after its imports, which nobody may not be allowed to read) and prints one JSON
    value, which is returned."""
    prelude = textwrap.dedent("""
        import json, os
        def drop_privileges():
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    root, cases = write_bad_corpus(folder)
    return folder, root, cases


def test_every_case_gets_its_outcome_from_the_decoder(bad_corpus):
    folder, root, cases = bad_corpus
    wrong = []
    for case in cases:
        size = case.pixels.shape[:2] if case.pixels is not None else (32, 32)
        path = resolve_path(case.cell, str(folder))
        out = decode_paths([path], [(size, Framing())], root=normalise_root(root))
        if out.codes[0] != case.code:
            wrong.append(f"{case.name}: {out.codes[0]} ({out.messages[0]}), want {case.code}")
        elif case.pixels is not None:
            got = out.images[image_column(size)][0].astype(int)
            diff = np.abs(got - case.pixels).mean()
            if diff > case.atol:
                wrong.append(f"{case.name}: pixels differ by {diff:.1f} on average")
        elif not out.messages[0]:
            wrong.append(f"{case.name}: no message")
    assert wrong == []
    codes = {c.code for c in cases}
    assert codes - {None} <= {str(c) for c in ErrorCode}


@pytest.mark.parametrize("orientation", sorted(ROTATED))
def test_exif_orientation_moves_the_pixels(orientation):
    want = ROTATED[orientation]
    (out,) = decode_image(exif_jpeg(orientation), [want.shape[:2]])
    red = out[..., 0].astype(int) > out[..., 2]
    assert (red == (want[..., 0] > want[..., 2])).mean() > 0.97


def test_one_pixel_image_fills_any_size():
    (a, b) = decode_image(encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), [1, (48, 32)])
    assert a.shape == (1, 1, 3) and b.shape == (48, 32, 3)
    assert (b == [9, 99, 199]).all()


def test_bombs_are_refused_from_the_header_without_allocating(tmp_path):
    """A fresh process whose address space has only 256 MB to spare decodes headers claiming
    900, 900 and 81 Mpixels (the last between this loader's bound and Pillow's own): each is
    refused as too_large; a real 2000x2000 image still decodes under the same limit."""
    files = {
        "png_30000": png_claiming(30000, 30000),
        "jpeg_30000": jpeg_claiming(30000, 30000),
        "jpeg_9000": jpeg_claiming(9000, 9000),
        "control": encode(Image.fromarray(smooth(2000, 2000)), "JPEG"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    got = run_child(f"""
        import resource
        from models.imageio import ImageError, decode_image
        vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1])
        spare = 256 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (vm * 1024 + spare, resource.RLIM_INFINITY))
        out = {{}}
        for name in {list(files)!r}:
            data = open(os.path.join({str(tmp_path)!r}, name), "rb").read()
            try:
                out[name] = [list(decode_image(data, [32])[0].shape), ""]
            except ImageError as exc:
                out[name] = [str(exc.code), exc.message]
            except MemoryError:
                out[name] = ["MemoryError", ""]
        print(json.dumps(out))
    """)
    assert {k: v[0] for k, v in got.items()} == {
        "png_30000": "too_large",
        "jpeg_30000": "too_large",
        "jpeg_9000": "too_large",
        "control": [32, 32, 3],
    }
    assert "pixel" in got["jpeg_9000"][1]


def test_unreadable_file_is_permission_denied_for_an_unprivileged_user():
    # Root reads any file: the decoder runs in a child that drops to user nobody; a readable
    # file beside it shows the folder itself is open to that user.
    folder = Path(tempfile.mkdtemp(prefix="gs-perm-"))
    try:
        folder.chmod(0o755)
        for name in ("secret.png", "open.png"):
            Image.fromarray(smooth(20, 20)).save(folder / name)
        (folder / "secret.png").chmod(0)
        got = run_child(
            f"""
            from PIL import Image
            from models.framing import Framing
            from scoring.decode import decode_paths
            Image.init()  # Pillow imports its format plugins on first use
            drop_privileges()
            out = decode_paths(
                [{str(folder / "secret.png")!r}, {str(folder / "open.png")!r}], [(8, Framing())]
            )
            print(json.dumps(out.codes))
            """,
        )
        assert got == ["permission_denied", None]
    finally:
        shutil.rmtree(folder)


def read_out(out: Path):
    return pq.read_table(sorted(out.glob("part-*.parquet"))).sort_by("row")


@pytest.mark.slow  # the whole bad corpus through a real Ray run
def test_whole_corpus_end_to_end_loses_no_row(ray_local, bad_corpus, onnx_models, tmp_path):
    folder, root, cases = bad_corpus
    manifest = write_manifest(folder / "manifest.csv", cases)
    name, model = "mobilenetv2", onnx_models["mobilenetv2"]  # outcomes do not depend on models
    result = score_manifest(
        manifest,
        models=[model],
        out=tmp_path / "out",
        root=root,
        keep_columns="case",
        batch_size=4,
        num_workers=1,
        progress=False,
    )
    table = read_out(result.out)
    assert table["row"].to_pylist() == list(range(len(cases)))  # every row exactly once
    assert table["case"].to_pylist() == [c.name for c in cases]
    want = [("ok", None) if c.code is None else ("error", c.code) for c in cases]
    assert (
        list(zip(table["status"].to_pylist(), table["error_code"].to_pylist(), strict=True)) == want
    )
    ok = np.array([c.code is None for c in cases])
    messages = table["error"].to_pylist()
    assert all(messages[i] for i in np.flatnonzero(~ok)) and not any(
        messages[i] for i in np.flatnonzero(ok)
    )
    counts = collections.Counter(c.code for c in cases if c.code)
    assert result.summary["errors_by_code"] == dict(counts)
    assert result.summary["rows"] == len(cases)
    # scored rows: the probabilities of a direct ORT run on the loader's pixels
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    paths = [resolve_path(c.cell, str(folder)) for c in cases]
    probs = table[f"p_{name}"].to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(ok):
        image = load_image(paths[i], 48)[None]
        np.testing.assert_allclose(
            probs[i], session.run(["prob"], {"image": image})[0][0], atol=1e-5
        )
    errors = table.filter(pa.array(~ok))
    for col in (c for c in table.column_names if c.startswith("p_")):
        assert errors[col].null_count == errors.num_rows
    names = [c.name for c in cases]
    assert probs[names.index("duplicate")] == probs[names.index("photo.webp")]
