"""Face framing in a real scoring run: photos with and without faces, each model framed as its
metadata says unless ``--faces`` overrides it, and the face columns of the output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
from photos import no_face, photo

from convert.metadata import read_metadata, set_metadata
from models.framing import FaceMode, Framing
from models.imageio import load_image
from scoring.layout import SUMMARY
from scoring.run import score_manifest


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A manifest of photos: faces at several places and sizes, one without a face, one
    unreadable file; and the kind of each row."""
    folder = tmp_path_factory.mktemp("photos")
    kinds = []
    rows = []
    for i, (source, side, at) in enumerate(
        [("astronaut", 110, None), ("camera", 120, (20, 30)), ("astronaut", 90, (200, 120))]
    ):
        path = folder / f"face{i}.jpg"
        photo(source=source, side=side, at=at, seed=i).save(path, quality=92)
        rows.append(str(path))
        kinds.append(("face", side, at))
    no_face().save(folder / "coffee.jpg")
    rows.append(str(folder / "coffee.jpg"))
    kinds.append(("none", 0, None))
    (folder / "broken.jpg").write_bytes(b"not an image")
    rows.append(str(folder / "broken.jpg"))
    kinds.append(("broken", 0, None))
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path"])
        w.writerows([r] for r in rows)
    return manifest, kinds


def _score(manifest: Path, models: list[str], out: Path, **options) -> tuple:
    score_manifest(manifest, models=models, out=out, batch_size=4, progress=False, **options)
    table = pq.read_table(sorted(out.glob("part-*.parquet"))).sort_by("row")
    return table, json.loads((out / SUMMARY).read_text())


def _direct(model: str, path: str, framing: Framing) -> float:
    size = read_metadata(model).input_size
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return float(session.run(["prob"], {"image": load_image(path, size, framing)[None]})[0][0])


def test_align_frames_faces_and_reports_them(ray_local, photos, model_paths, tmp_path):
    manifest, kinds = photos
    table, summary = _score(manifest, model_paths, tmp_path / "out", faces="align")
    assert table["status"].to_pylist() == ["ok"] * 4 + ["error"]
    assert table["faces"].to_pylist() == [1, 1, 1, 0, None]
    boxes = table["face_box"].to_pylist()
    for (kind, side, at), box in zip(kinds[:3], boxes[:3], strict=True):
        x, y = at if at is not None else ((320 - side) // 2, (240 - side) // 2)
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        assert x < cx < x + side and y < cy < y + side, (kind, side, at, box)
    assert boxes[3] is None and table["face_score"].to_pylist()[3] is None
    assert summary["rows_by_faces"] == {"0": 1, "1": 3}
    # every model scored the aligned crop (or, without a face, the whole photo)
    align = Framing(FaceMode.ALIGN)
    paths = table["path"].to_pylist()
    for model in model_paths:
        name = read_metadata(model).name
        got = table[f"p_{name}"].to_pylist()
        want = [_direct(model, p, align) for p in paths[:4]]
        np.testing.assert_allclose(got[:4], want, atol=1e-5)
    meta = json.loads(
        pq.read_schema(sorted((tmp_path / "out").glob("part-*"))[0]).metadata[b"genderscore"]
    )
    assert {m["framing"]["mode"] for m in meta["models"]} == {"align"}


def test_require_turns_a_faceless_photo_into_a_no_face_row(
    ray_local, photos, model_paths, tmp_path
):
    manifest, _ = photos
    table, summary = _score(manifest, model_paths[:1], tmp_path / "out", faces="require")
    assert table["status"].to_pylist() == ["ok"] * 3 + ["error"] * 2
    assert table["error_code"].to_pylist()[3:] == ["no_face", "unsupported"]
    assert summary["errors_by_code"]["no_face"] == 1


def test_a_model_framed_in_its_metadata_is_aligned_without_a_flag(
    ray_local, photos, onnx_models, tmp_path
):
    """Framing travels with the model: one member aligned by its metadata, one whole-image."""
    import onnx

    manifest, _ = photos
    names = list(onnx_models)
    aligned = tmp_path / f"{names[0]}_aligned.onnx"
    proto = onnx.load(str(onnx_models[names[0]]))
    meta = read_metadata(proto)
    from dataclasses import replace

    set_metadata(proto, replace(meta, name=f"{meta.name}_aligned", framing=Framing(FaceMode.ALIGN)))
    onnx.save(proto, str(aligned))
    whole = str(onnx_models[names[0]])
    table, _ = _score(manifest, [str(aligned), whole], tmp_path / "out")
    assert table["faces"].to_pylist()[:4] == [1, 1, 1, 0]
    path = table["path"][0].as_py()
    got_aligned = table[f"p_{meta.name}_aligned"][0].as_py()
    got_whole = table[f"p_{meta.name}"][0].as_py()
    assert got_aligned == pytest.approx(
        _direct(str(aligned), path, Framing(FaceMode.ALIGN)), abs=1e-5
    )
    assert got_whole == pytest.approx(_direct(whole, path, Framing()), abs=1e-5)
    assert got_aligned != pytest.approx(got_whole, abs=1e-4)  # the two crops differ


@pytest.mark.slow
def test_a_model_trained_with_align_is_scored_aligned(ray_local, photos, tmp_path):
    """models train --faces align -> run.json -> convert -> ONNX metadata -> scoring run: the
    scorer aligns faces for it with no --faces anywhere after training."""
    from click.testing import CliRunner

    from convert.converter import convert_model
    from models.cli import cli
    from models.runinfo import read_run_info

    data = tmp_path / "data"
    for label, source in (("female", "astronaut"), ("male", "camera")):
        (data / label).mkdir(parents=True)
        for i in range(8):
            side = 80 + 10 * i
            photo(source=source, side=side, seed=i).save(data / label / f"{i}.jpg")
    run_dir = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run_dir), "--backbone", "mobilenetv2",
            "--image-size", "32", "--weights", "none", "--epochs", "1", "--batch-size", "8",
            "--faces", "align", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    info = read_run_info(run_dir)
    assert info is not None and info.framing == Framing(FaceMode.ALIGN)
    shown = tmp_path / "shown.png"
    faces_dir = data / "female"
    args = ["predict", str(faces_dir / "0.jpg"), str(faces_dir / "5.jpg"), "--model",
            str(run_dir / "model.keras"), "--show", str(shown), "--format", "json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert len([ln for ln in result.output.splitlines() if ln.startswith("{")]) == 2
    from PIL import Image

    assert Image.open(shown).size[0] > Image.open(shown).size[1] / 2  # photo and crop per row
    model = convert_model(run_dir, tmp_path / "aligned.onnx", name="aligned").path
    assert read_metadata(model).framing == Framing(FaceMode.ALIGN)
    manifest, _ = photos
    table, summary = _score(manifest, [str(model)], tmp_path / "out")
    assert table["faces"].to_pylist() == [1, 1, 1, 0, None]
    assert summary["models"][0]["framing"]["mode"] == "align"
    path = table["path"][0].as_py()
    want = _direct(str(model), path, Framing(FaceMode.ALIGN))
    assert table["p_aligned"][0].as_py() == pytest.approx(want, abs=1e-5)
