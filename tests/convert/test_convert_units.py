"""The pure pieces of convert, without TensorFlow: head algebra, metadata, options, the
preprocessing verdict, the INT8 decision and gate, check-data discovery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from convert.checkdata import load_check_images
from convert.errors import ParityError
from convert.head import linear_head, positive_probability
from convert.metadata import ModelMetadata, read_metadata, set_metadata
from convert.modecheck import group_of, hanley_mcneil_se, judge_modes, mode_groups
from convert.options import ConvertOptions, check_options, resolve_settings
from convert.parity import compare_outputs, require_parity
from convert.quantize import choose_format, int8_gate, ranked_formats
from models.errors import DataError, UsageError
from models.framing import FaceMode, Framing
from models.probabilities import sigmoid
from models.runinfo import RunInfo


def softmax(u: np.ndarray) -> np.ndarray:
    e = np.exp(u - u.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("positive", [0, 1])
def test_softmax_head_logit_is_the_log_odds_of_the_positive_class(positive):
    rng = np.random.default_rng(0)
    kernel, bias, z = rng.normal(size=(5, 2)), rng.normal(size=2), rng.normal(size=(7, 5))
    head = linear_head(kernel, bias, "softmax", positive)
    probs = softmax(z @ kernel + bias)[:, positive]
    np.testing.assert_allclose(sigmoid(head.logit(z)), probs, rtol=1e-12)
    np.testing.assert_allclose(
        positive_probability(softmax(z @ kernel + bias), "softmax", positive), probs
    )


@pytest.mark.parametrize("positive", [0, 1])
def test_sigmoid_head_flips_sign_when_the_first_class_is_positive(positive):
    rng = np.random.default_rng(1)
    kernel, bias, z = rng.normal(size=(4, 1)), rng.normal(size=1), rng.normal(size=(6, 4))
    head = linear_head(kernel, bias, "sigmoid", positive)
    p_class1 = sigmoid(z @ kernel[:, 0] + bias[0])
    expected = p_class1 if positive == 1 else 1 - p_class1
    np.testing.assert_allclose(sigmoid(head.logit(z)), expected, rtol=1e-12)
    out = p_class1[:, None]
    np.testing.assert_allclose(positive_probability(out, "sigmoid", positive), expected)


def test_logit_heads_and_unsupported_heads():
    kernel = np.ones((3, 1))
    head = linear_head(kernel, None, "linear", 1)
    assert head.kind == "logit" and head.bias == 0.0
    np.testing.assert_allclose(
        positive_probability(np.array([[0.0], [50.0]]), "logit", 1), [0.5, 1.0]
    )
    with pytest.raises(UsageError, match=r"Dense\(3, softmax\).*Dense\(1, sigmoid\)"):
        linear_head(np.ones((3, 3)), None, "softmax", 1)
    with pytest.raises(UsageError, match=r"Dense\(1, relu\)"):
        linear_head(kernel, None, "relu", 1)


def test_sigmoid_is_stable_far_from_zero():
    out = sigmoid(np.array([-800.0, 0.0, 800.0]))
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0])


def _metadata(**overrides) -> ModelMetadata:
    fields = dict(
        schema_version=1,
        name="mnv2",
        backbone="mobilenetv2",
        input_size=(48, 40),
        class_names=("female", "male"),
        positive_class="male",
        preprocessing="mobilenet_v2",
        source_sha256="ab" * 32,
        versions={"onnx": "1.0"},
        created_at="2025-01-01T00:00:00Z",
        quantization={"scheme": "u8s8"},
        extra={"parity": {"max_abs_logit_diff": 1e-6}},
    )
    return ModelMetadata(**(fields | overrides))


def test_metadata_round_trips_through_an_onnx_file(tmp_path: Path):
    graph = onnx.helper.make_graph([], "g", [], [])
    model = onnx.helper.make_model(graph)
    model.metadata_props.add(key="author", value="someone else")
    meta = _metadata()
    set_metadata(model, meta)
    set_metadata(model, meta)  # replacing, not appending
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    got = read_metadata(path)
    assert got == meta and got.extra == meta.extra
    assert got.input_size == (48, 40) and got.column == "p_mnv2" and got.negative_class == "female"
    keys = [p.key for p in onnx.load(path).metadata_props]
    assert keys.count("genderscore.name") == 1 and "author" in keys
    assert json.loads(
        dict((p.key, p.value) for p in model.metadata_props)["genderscore.class_names"]
    ) == [
        "female",
        "male",
    ]


def test_metadata_errors_name_the_problem(tmp_path: Path):
    bare = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    path = tmp_path / "bare.onnx"
    onnx.save(bare, path)
    with pytest.raises(DataError, match="no genderscore metadata: convert"):
        read_metadata(path)
    props = _metadata().to_props()
    del props["genderscore.positive_class"]
    with pytest.raises(DataError, match="lacks genderscore.positive_class"):
        ModelMetadata.from_props(props)
    with pytest.raises(DataError, match="schema 9"):
        ModelMetadata.from_props(_metadata().to_props() | {"genderscore.schema_version": "9"})
    with pytest.raises(DataError, match="becomes the scoring column"):
        _metadata(name="p-1")
    with pytest.raises(DataError, match="not one of"):
        _metadata(positive_class="other")
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(DataError, match="is not an ONNX model"):
        read_metadata(tmp_path / "text.onnx")


def test_check_options_one_message_per_problem(tmp_path: Path):
    check_options(ConvertOptions())
    cases = [
        (
            dict(preprocess="caffe"),
            "unknown --preprocess 'caffe': choose one of auto, mobilenet_v2",
        ),
        (dict(class_names=("male", "male")), "two distinct names"),
        (dict(class_names=("female", "male"), positive="man"), "--positive 'man' is not one of"),
        (dict(name="1st"), "--name '1st'"),
        (dict(opset=7), "--opset 7: choose between 13 and"),
        (dict(int8=True), "--int8 needs --calibration"),
        (dict(calibration=tmp_path), "only used with --int8"),
        (dict(int8=True, calibration=tmp_path, int8_format="u4"), "unknown --int8-format"),
        (dict(min_agreement=2.0), "between 0 and 1"),
        (dict(parity_tolerance=0.0), "--parity-tolerance"),
        (dict(check_data=tmp_path / "missing"), "--check-data .*missing: no such"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UsageError, match=message):
            check_options(ConvertOptions(**kwargs))


def _run_info(**overrides) -> RunInfo:
    data = {
        "class_names": ["female", "male"],
        "positive_class": "male",
        "preprocessing": "resnet50",
        "image_size": [64, 64],
    }
    return RunInfo.from_dict(data | overrides, Path("/runs/r1/run.json"))


def test_resolve_settings_auto_needs_a_run_record():
    with pytest.raises(
        UsageError,
        match=r"no run.json.*--preprocess mobilenet_v2\|resnet50\|efficientnet\|rescale\|none",
    ):
        resolve_settings(ConvertOptions(), None, Path("/m/model.h5"), (64, 64))
    s = resolve_settings(ConvertOptions(), _run_info(), Path("/runs/r1/model.keras"), (64, 64))
    assert (s.preprocessing, s.class_names, s.positive_class) == (
        "resnet50",
        ("female", "male"),
        "male",
    )
    assert s.name == "r1" and s.sources["preprocessing"] == "run.json"


def test_resolve_settings_refuses_contradicting_the_record_unless_forced():
    opts = ConvertOptions(preprocess="rescale")
    with pytest.raises(
        UsageError,
        match="--preprocess 'rescale' contradicts 'resnet50' recorded in /runs/r1/run.json",
    ):
        resolve_settings(opts, _run_info(), Path("/runs/r1/model.keras"), (64, 64))
    forced = resolve_settings(
        ConvertOptions(preprocess="rescale", force=True), _run_info(), Path("x.keras"), (64, 64)
    )
    assert forced.preprocessing == "rescale"


def test_resolve_settings_defaults_and_sizes():
    s = resolve_settings(
        ConvertOptions(preprocess="none", positive="female"),
        None,
        Path("/m/My Model-v2.h5"),
        (32, 40),
    )
    assert s.class_names == ("female", "male") and s.positive_index == 0
    assert s.name == "my_model_v2" and s.input_size == (32, 40)
    with pytest.raises(UsageError, match="accepts any image size.*--image-size"):
        resolve_settings(ConvertOptions(preprocess="none"), None, Path("m.h5"), None)
    assert resolve_settings(
        ConvertOptions(preprocess="none", image_size=(50, 60)), None, Path("m.h5"), None
    ).input_size == (50, 60)
    with pytest.raises(UsageError, match="differs from the model's fixed input 32x40"):
        resolve_settings(
            ConvertOptions(preprocess="none", image_size=(50, 60)), None, Path("m.h5"), (32, 40)
        )


def test_parity_scales_the_bound_with_the_logit():
    k = np.array([0.5, 20.0])
    ok = compare_outputs(
        k, sigmoid(k), k + np.array([5e-5, 1.5e-3]), sigmoid(k), source="generated"
    )
    assert ok.passed and ok.max_abs_logit_diff == pytest.approx(1.5e-3)
    bad = compare_outputs(k, sigmoid(k), k + np.array([3e-4, 0.0]), sigmoid(k), source="generated")
    assert not bad.passed
    with pytest.raises(
        ParityError, match=r"differ from Keras by up to 0.0003 .*allowed 0.0001.*not written"
    ):
        require_parity(bad)
    nan = compare_outputs(k, sigmoid(k), np.array([np.nan, 20.0]), sigmoid(k))
    assert not nan.passed


def test_mode_groups_merge_identical_inputs():
    groups = mode_groups()
    assert groups["efficientnet"] == ("efficientnet", "none")
    assert group_of("none") == "efficientnet" and group_of("rescale") == "rescale"
    assert set(groups) == {"mobilenet_v2", "resnet50", "efficientnet", "rescale"}


def test_judge_modes_refuses_only_a_clearly_worse_declaration():
    aucs = {"mobilenet_v2": 0.95, "resnet50": 0.55, "efficientnet": 0.5, "rescale": 0.89}
    wrong = judge_modes("none", aucs, 24, 24)
    assert wrong.refused and wrong.best == "mobilenet_v2" and wrong.declared_auc == 0.5
    assert wrong.describe("efficientnet") == "efficientnet (same input as none)"
    # rescale is 0.06 worse: within the noise on 48 images, clear on 4000.
    assert not judge_modes("rescale", aucs, 24, 24).refused
    assert judge_modes("rescale", aucs, 2000, 2000).refused
    assert not judge_modes("mobilenet_v2", aucs, 24, 24).refused
    assert hanley_mcneil_se(0.9, 24, 24) > hanley_mcneil_se(0.9, 240, 240) > 0


def test_ranked_formats_are_those_that_pay_fastest_first():
    assert ranked_formats({"fp32": 56, "u8s8": 194, "s8s8": 62}) == ["u8s8"]  # s8s8 < 1.15x
    assert ranked_formats({"fp32": 50, "u8s8": 60, "s8s8": 90}) == ["s8s8", "u8s8"]
    assert ranked_formats({"fp32": 100, "u8s8": 105, "s8s8": 130}) == ["s8s8"]
    assert ranked_formats({"fp32": 199, "u8s8": 179, "s8s8": 63}) == []
    with pytest.raises(ValueError, match="no int8 speeds measured"):
        ranked_formats({"fp32": 100})


def test_choose_format_keeps_fp32_when_int8_does_not_pay():
    assert choose_format({"fp32": 56, "u8s8": 194, "s8s8": 62}) == "u8s8"
    assert choose_format({"fp32": 199, "u8s8": 179, "s8s8": 63}) is None
    assert choose_format({"fp32": 100, "s8s8": 130}) == "s8s8"
    assert choose_format({"fp32": 100, "s8s8": 110}) is None


def test_int8_gate_bounds():
    y = np.array([0, 0, 1, 1] * 25)
    p = np.linspace(0.01, 0.99, 100)
    same = int8_gate(y, p, p + 1e-4)
    assert same.passed and same.auc_drop == pytest.approx(0.0) and same.agreement == 1.0
    flipped = p.copy()
    flipped[:3] = 0.9  # three of 100 labels change
    gate = int8_gate(y, p, flipped)
    assert not gate.passed and gate.agreement == 0.97
    assert "agreement at 0.5 97.00% (needed 99.00%)" in gate.describe()
    unlabeled = int8_gate(np.full(100, -1), p, p)
    assert (
        unlabeled.passed
        and unlabeled.auc_drop is None
        and "AUC not measured" in unlabeled.describe()
    )
    worse = int8_gate(y, p, np.where(y == 1, p - 0.2, p))
    assert (
        worse.auc_drop > 0.005
        and not int8_gate(y, p, np.where(y == 1, p - 0.2, p), min_agreement=0).passed
    )


def _image(path: Path, color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 10), color).save(path)


def test_check_images_from_folders_and_csv(tmp_path: Path):
    _image(tmp_path / "val" / "Male" / "a.png", (255, 0, 0))
    _image(tmp_path / "val" / "female" / "deep" / "b.jpg", (0, 255, 0))
    _image(tmp_path / "other" / "c.png", (0, 0, 255))
    (tmp_path / "val" / "Male" / "broken.jpg").write_bytes(b"not an image")
    got = load_check_images(tmp_path, (8, 6), ("female", "male"), "male")
    assert got.images.shape == (3, 8, 6, 3) and got.images.dtype == np.uint8
    labels = dict(zip([Path(p).name for p in got.paths], got.labels.tolist(), strict=True))
    assert labels == {"c.png": -1, "a.png": 1, "b.jpg": 0}
    assert list(got.skipped.values()) == ["unsupported"] and got.n_per_class == (1, 1)

    (tmp_path / "list.csv").write_text(
        "path,label\nval/Male/a.png,male\nval/female/deep/b.jpg,female\n"
    )
    csv = load_check_images(tmp_path / "list.csv", (8, 6), ("female", "male"), "female", limit=1)
    assert len(csv) == 1 and csv.labels[0] in (0, 1)
    (tmp_path / "bad.csv").write_text("path,label\nval/Male/a.png,man\n")
    with pytest.raises(DataError, match=r"labels \['man'\] are not class names"):
        load_check_images(tmp_path / "bad.csv", (8, 6), ("female", "male"), "male")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_check_images(tmp_path / "empty", (8, 6), ("female", "male"), "male")


def test_framing_travels_in_the_metadata_and_old_models_are_unframed(tmp_path: Path):
    aligned = Framing(FaceMode.ALIGN, ((0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.5, 0.7)))
    got = ModelMetadata.from_props(_metadata(framing=aligned).to_props())
    assert got.framing == aligned and "framing" not in got.extra
    assert (
        json.loads(_metadata(framing=aligned).to_props()["genderscore.framing"])["mode"] == "align"
    )
    old = _metadata().to_props()
    del old["genderscore.framing"]
    assert ModelMetadata.from_props(old | {"genderscore.schema_version": "1"}).framing == Framing()
    with pytest.raises(DataError, match="genderscore.framing: bad framing"):
        ModelMetadata.from_props(old | {"genderscore.framing": '{"mode": "sideways"}'})


def test_resolve_settings_takes_framing_from_run_json_or_the_option():
    framed = _run_info(framing=Framing(FaceMode.REQUIRE).to_dict())
    s = resolve_settings(ConvertOptions(), framed, Path("/runs/r1/model.keras"), (64, 64))
    assert s.framing.mode == "require" and s.sources["framing"] == "run.json"
    opts = ConvertOptions(faces="align", preprocess="none")
    plain = resolve_settings(opts, None, Path("m.keras"), (64, 64))
    assert plain.framing == Framing(FaceMode.ALIGN) and plain.sources["framing"] == "option"
    with pytest.raises(UsageError, match="--faces off contradicts framing require recorded in"):
        resolve_settings(ConvertOptions(faces="off"), framed, Path("m.keras"), (64, 64))
    with pytest.raises(UsageError, match="unknown face framing 'sideways': choose one of off"):
        check_options(ConvertOptions(faces="sideways"))
