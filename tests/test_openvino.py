"""OpenVINO export: the ONNX graph converted by OpenVINO's converter, the metadata in the IR's rt_info, and
predictions equal to onnxruntime's on the same export (boxes within BOX_PX pixels, scores within SCORE, same
classes and counts): NMS baked in (dynamic and batch-1 files), raw, some heads, image-level heads, the CLI
export -> predict path; and without openvino installed, a message that says how to install it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from test_infer_api import REAL, needs_images, spread_model, synthetic_images, write_weights

import hydradet
from hydradet.cli import main
from hydradet.config import load_config
from hydradet.errors import UserError, WeightsError
from hydradet.export import export_onnx
from hydradet.export.openvino import export_openvino
from hydradet.infer.results import Result
from hydradet.infer.settings import SettingError
from hydradet.model.detector import HydraDetector

ov = pytest.importorskip("openvino")

# Measured (CPU, f32; 1032 detections on 6 synthetic images and the 5 COCO photos, boxes in original pixels):
# at most 3.1e-4 px and 1.2e-6 in score apart. The bounds leave
# room for another CPU's kernels, yet are 100x tighter than what separates two distinct detections.
BOX_PX, SCORE = 1e-3, 1e-4
OPTIONS = {"dynamic_batch": True, "conf": 0.5, "max_det": 50}


def assert_equal_within(a: list[Result], b: list[Result]) -> None:
    """Same heads, same detections in the same order (classes), boxes within BOX_PX and scores within SCORE."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.heads.keys() == rb.heads.keys()
        for h, x in ra.heads.items():
            y = rb.heads[h]
            assert x.class_ids.tolist() == y.class_ids.tolist(), h  # type: ignore[union-attr]
            np.testing.assert_allclose(x.boxes, y.boxes, rtol=0, atol=BOX_PX)  # type: ignore[union-attr]
            np.testing.assert_allclose(x.scores, y.scores, rtol=0, atol=SCORE)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_weights(tmp_path_factory.mktemp("ov") / "model.safetensors")


@pytest.fixture(scope="module")
def exports(weights: Path) -> tuple[Path, Path]:
    """The same model and options as an .onnx file and as an OpenVINO folder."""
    onnx_file = export_onnx(spread_model(), weights.with_name("model.onnx"), **OPTIONS)
    xml = export_openvino(spread_model(), weights.with_name("model_openvino_model"), **OPTIONS)
    return onnx_file, xml


def test_the_folder_holds_xml_and_bin_with_the_onnx_metadata_in_rt_info(exports):
    onnx_file, xml = exports
    assert xml == onnx_file.with_name("model_openvino_model") / "model.xml"
    assert sorted(p.name for p in xml.parent.iterdir()) == ["model.bin", "model.xml"]
    ir = ov.Core().read_model(str(xml))
    # float32 weights, not save_model's fp16 default (which would store f16 constants and move the scores).
    constants = {
        op.get_output_element_type(0).get_type_name() for op in ir.get_ops() if op.get_type_name() == "Constant"
    }
    assert "f32" in constants and "f16" not in constants
    expected = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert {k: v.astype(str) for k, v in ir.get_rt_info()["hydradet"].items()} == expected
    assert json.loads(expected["nms"])["person"].items() >= {"conf": 0.5, "iou": 0.5, "max_det": 50}.items()
    assert [o.get_any_name() for o in ir.outputs] == [
        f"{h}_{k}" for h in ("person", "animal") for k in ("boxes", "scores", "class_ids")
    ]


def test_openvino_gives_onnxruntimes_detections(exports):
    onnx_file, xml = exports
    images = synthetic_images(6)
    ort_model, ov_model = hydradet.load(onnx_file), hydradet.load(xml.parent)  # the folder, as Ultralytics
    expected = ort_model.predict(images, conf=0.6, batch=4)
    assert sum(len(h) for r in expected for h in r.heads.values()) > 10
    assert_equal_within(ov_model.predict(images, conf=0.6, batch=4), expected)
    conf = {"person": 0.9, "animal": 0.7}
    assert_equal_within(hydradet.load(xml).predict(images, conf=conf), ort_model.predict(images, conf=conf))
    assert repr(ov_model).startswith(f"Model({xml.parent};")


@needs_images
def test_openvino_gives_onnxruntimes_detections_on_real_images(exports):
    onnx_file, xml = exports
    expected = hydradet.load(onnx_file).predict(REAL, conf=0.6, batch=2)
    assert sum(len(h) for r in expected for h in r.heads.values()) > 5
    assert_equal_within(hydradet.load(xml).predict(REAL, conf=0.6, batch=2), expected)


def test_some_heads_compile_a_model_without_the_others(exports):
    onnx_file, xml = exports
    model = hydradet.load(xml)
    images = synthetic_images(3)
    expected = hydradet.load(onnx_file).predict(images, heads="animal", conf=0.6)
    assert_equal_within(model.predict(images, heads="animal", conf=0.6), expected)
    session = model.backend._session(("animal",))
    assert [o.name for o in session.get_outputs()] == ["animal_boxes", "animal_scores", "animal_class_ids"]
    full = model.backend._session(("person", "animal")).compiled.get_runtime_model().get_ops()
    assert len(session.compiled.get_runtime_model().get_ops()) < len(full)  # the person head's nodes are gone


def test_batch_one_and_raw_exports(weights: Path, tmp_path: Path):
    images = synthetic_images(3)
    for name, options in (("static", {"conf": 0.5}), ("raw", {"raw": True, "dynamic_batch": True})):
        onnx_file = export_onnx(spread_model(), tmp_path / f"{name}.onnx", **options)
        xml = export_openvino(spread_model(), tmp_path / f"{name}_openvino_model", **options)
        kwargs = {"conf": 0.6, "batch": 2} if name == "static" else {"conf": 0.3, "iou": 0.3}
        assert_equal_within(
            hydradet.load(xml).predict(images, **kwargs), hydradet.load(onnx_file).predict(images, **kwargs)
        )


def test_image_level_heads(tmp_path: Path):
    heads = {
        "person": {"task": "detect", "classes": ["person"]},
        "gender": {"task": "classify", "classes": ["male", "female"]},
        "age": {"task": "regress"},
    }
    labels = {"gender": {"column": "g", "values": {0: "male", 1: "female"}}, "age": {"column": "age"}}
    sources = {
        "people": {"format": "coco", "train": "x.json", "labels": {"person": {"person": "person"}}},
        "faces": {"format": "csv", "train": "x.csv", "labels": labels},
    }
    overrides = [
        "model.backbone=shufflenet_v2_x0_5",
        "model.backbone_weights=null",
        "model.imgsz=64",
        "model.neck_width=16",
    ]
    cfg = load_config({"heads": heads, "sources": sources}, overrides, check_paths=False)
    net = HydraDetector(cfg.model, cfg.heads).eval()
    onnx_file = export_onnx(net, tmp_path / "m.onnx")
    xml = export_openvino(net, tmp_path / "m_openvino_model")
    images = synthetic_images(2)
    for a, b in zip(hydradet.load(onnx_file).predict(images), hydradet.load(xml).predict(images), strict=True):
        np.testing.assert_allclose(a.heads["gender"].probs, b.heads["gender"].probs, atol=SCORE)  # type: ignore[union-attr]
        assert a.heads["age"].value == pytest.approx(b.heads["age"].value, abs=1e-4)  # type: ignore[union-attr]


def test_cli_export_then_predict_matches_the_onnx_file(weights: Path, tmp_path: Path, capsys):
    conf = ["--conf", "person=0.7,animal=0.5"]
    assert main(["export", str(weights), "--format", "openvino", *conf, "--dynamic-batch"]) == 0
    folder = weights.with_name("model_openvino_model")  # the default: beside the weights, Ultralytics' name
    assert (folder / "model.xml").is_file() and "OpenVINO IR" in capsys.readouterr().out
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(weights), *conf, "--dynamic-batch", "--out", str(onnx_file)]) == 0
    images = tmp_path / "imgs"
    images.mkdir()
    for i, a in enumerate(synthetic_images(3)):
        Image.fromarray(a).save(images / f"im{i}.png")
    records = {}
    for name, exported in (("onnx", onnx_file), ("openvino", folder), ("xml", folder / "model.xml")):
        out = tmp_path / name
        assert main(["predict", str(exported), str(images), "--conf", "person=0.8,animal=0.6", "--out", str(out)]) == 0
        records[name] = json.loads((out / "predictions.json").read_text())
    assert sum(len(d) for r in records["onnx"] for d in r["heads"].values()) > 0
    for name in ("openvino", "xml"):
        for a, b in zip(records["onnx"], records[name], strict=True):
            for h in ("person", "animal"):
                assert [d["class"] for d in a["heads"][h]] == [d["class"] for d in b["heads"][h]]
                np.testing.assert_allclose(
                    [d["box"] for d in a["heads"][h]], [d["box"] for d in b["heads"][h]], atol=0.01
                )


def test_a_folder_without_an_ir_and_a_device_openvino_lacks_are_refused(exports, tmp_path: Path):
    with pytest.raises(WeightsError, match=r"no \.xml"):
        hydradet.load(tmp_path)
    with pytest.raises(SettingError, match=r"device: 'cuda'.*onnx"):
        hydradet.load(exports[1], device="cuda")


def test_without_openvino_the_cli_says_how_to_install_it(weights: Path, exports, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'hydradet\[openvino\]'"):
        hydradet.load(exports[1])
    image = tmp_path / "im.png"
    Image.fromarray(synthetic_images(1)[0]).save(image)
    for args in (["predict", str(exports[1].parent), str(image)], ["export", str(weights), "--format", "openvino"]):
        assert main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "pip install 'hydradet[openvino]'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
