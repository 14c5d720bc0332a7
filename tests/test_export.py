"""ONNX export: one group of outputs per head with the documented shapes, padding and metadata; onnxruntime gives
the same detections as PyTorch (real images when ../shared is there); --raw, --heads and baked thresholds; the CLI
export -> predict path; and the eager NMS of decoded outputs equals the head's own postprocess."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import tiny_config, tiny_model
from PIL import Image
from test_infer_api import REAL, assert_same, needs_images, spread_model, synthetic_images, write_weights

import hydradet
from hydradet.cli import main
from hydradet.data.dataset import letterbox
from hydradet.export import export_onnx
from hydradet.export.nms import decode, select
from hydradet.infer.settings import SettingError

CONF = 0.8


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_weights(tmp_path_factory.mktemp("w") / "model.safetensors")


@pytest.fixture(scope="module")
def torch_model(weights: Path):
    return hydradet.load(weights)


@pytest.fixture(scope="module")
def dynamic_onnx(weights: Path) -> Path:
    return export_onnx(spread_model(), weights.with_name("dynamic.onnx"), dynamic_batch=True, conf=0.5, max_det=50)


@pytest.fixture(scope="module")
def static_onnx(weights: Path) -> Path:
    return export_onnx(spread_model(), weights.with_name("static.onnx"), conf=0.5)


def test_outputs_are_one_group_per_head_with_documented_shapes_padding_and_metadata(dynamic_onnx: Path):
    proto = onnx.load(str(dynamic_onnx))
    assert [o.name for o in proto.graph.output] == [
        f"{h}_{k}" for h in ("person", "animal") for k in ("boxes", "scores", "class_ids")
    ]
    assert {i.domain: i.version for i in proto.opset_import}[""] >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["heads"]) == ["person", "animal"]
    assert json.loads(meta["classes"])["animal"] == ["dog", "bird", "giraffe"]
    assert meta["imgsz"] == "128" and meta["batch"] == "dynamic" and meta["outputs"] == "nms"
    assert "pad right and bottom" in meta["letterbox"] and "114" in meta["letterbox"]
    assert json.loads(meta["nms"])["person"] == {"conf": 0.5, "iou": 0.5, "max_det": 50, "agnostic": False}

    x = torch.stack([letterbox(torch.from_numpy(a).permute(2, 0, 1), 128)[0] for a in synthetic_images(3)])
    sess = ort.InferenceSession(str(dynamic_onnx), providers=["CPUExecutionProvider"])
    arrays = sess.run(None, {"images": x.float().numpy() / 255})
    out = dict(zip([o.name for o in sess.get_outputs()], arrays, strict=True))
    for h in ("person", "animal"):
        boxes, scores, ids = out[f"{h}_boxes"], out[f"{h}_scores"], out[f"{h}_class_ids"]
        assert boxes.shape == (3, 50, 4) and scores.shape == (3, 50) and ids.shape == (3, 50)
        assert boxes.dtype == np.float32 and ids.dtype == np.int64
        for i in range(3):
            n = int((ids[i] >= 0).sum())
            assert (ids[i, :n] >= 0).all() and (ids[i, n:] == -1).all()  # detections first, then padding
            assert (scores[i, :n] > 0.5).all() and (np.diff(scores[i, :n]) <= 0).all()
            assert (scores[i, n:] == 0).all() and (boxes[i, n:] == 0).all()
    assert (out["person_class_ids"] == -1).any()  # some padding to check


@needs_images
def test_onnxruntime_gives_the_same_detections_as_pytorch_on_real_images(torch_model, dynamic_onnx, static_onnx):
    expected = torch_model.predict(REAL, conf=CONF, max_det=50)
    assert sum(len(h) for r in expected for h in r.heads.values()) > 5
    assert_same(hydradet.load(dynamic_onnx).predict(REAL, conf=CONF, batch=4), expected)
    assert_same(hydradet.load(static_onnx).predict(REAL, conf=CONF, batch=4), expected)  # batch-1 file, 4 asked


def test_onnxruntime_gives_the_same_detections_as_pytorch(torch_model, dynamic_onnx: Path):
    images = synthetic_images(4)
    onnx_model = hydradet.load(dynamic_onnx)  # NMS baked in with max_det 50
    assert_same(onnx_model.predict(images, conf=0.6), torch_model.predict(images, conf=0.6, max_det=50))
    # Per-head conf above the baked one filters the ONNX outputs just as PyTorch thresholds.
    conf = {"person": 0.9, "animal": 0.7}
    assert_same(onnx_model.predict(images, conf=conf), torch_model.predict(images, conf=conf, max_det=50))
    assert_same(onnx_model.predict(images, conf=0.7, max_det=5), torch_model.predict(images, conf=0.7, max_det=5))


def test_raw_export_with_nms_in_python_gives_the_same_detections(torch_model, weights: Path):
    path = export_onnx(spread_model(), weights.with_name("raw.onnx"), raw=True, dynamic_batch=True)
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["person_boxes", "person_scores", "animal_boxes", "animal_scores"]
    scores_shape = [d.dim_value or d.dim_param for d in proto.graph.output[3].type.tensor_type.shape.dim]
    assert scores_shape == ["batch", 16 * 16 + 8 * 8 + 4 * 4, 3]  # every location of the 3 levels x 3 classes
    images = synthetic_images(3)
    raw = hydradet.load(path)
    assert_same(raw.predict(images, conf=0.3, iou=0.3), torch_model.predict(images, conf=0.3, iou=0.3))


def test_the_default_layout_with_its_shared_tower_exports_to_the_same_raw_scores(tmp_path: Path):
    # spread_model pins per-head towers; this is the default layout (the tower in the neck, shared by the heads).
    cfg = tiny_config("model.backbone=shufflenet_v2_x0_5", "model.imgsz=128")
    assert cfg.model.shared_convs > 0
    net = tiny_model(cfg).eval()
    path = export_onnx(net, tmp_path / "default.onnx", raw=True)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        expected = net(x)
    got = dict(zip(["person_boxes", "person_scores", "animal_boxes", "animal_scores"], _run(path, x), strict=True))
    for head, out in expected.items():
        scores = (out.cls_logits.sigmoid() * out.centerness.sigmoid()[..., None]).sqrt()
        np.testing.assert_allclose(got[f"{head}_scores"], scores.numpy(), atol=1e-5)


def _run(path: Path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def test_export_heads_person_contains_and_returns_only_person(torch_model, weights: Path):
    path = export_onnx(spread_model(), weights.with_name("person.onnx"), heads=["person"], conf=0.5)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["person_boxes", "person_scores", "person_class_ids"]
    images = synthetic_images(2)
    results = hydradet.load(path).predict(images, conf=0.6)
    assert all(list(r.heads) == ["person"] for r in results)
    assert_same(results, torch_model.predict(images, heads=["person"], conf=0.6))


def test_onnx_predict_with_some_heads_runs_a_graph_without_the_others(torch_model, dynamic_onnx: Path):
    model = hydradet.load(dynamic_onnx)
    images = synthetic_images(2)
    expected = torch_model.predict(images, heads="animal", conf=0.6, max_det=50)
    assert_same(model.predict(images, heads="animal", conf=0.6), expected)
    session = model.backend._session(("animal",))
    assert [o.name for o in session.get_outputs()] == ["animal_boxes", "animal_scores", "animal_class_ids"]


def test_baked_thresholds_refuse_what_the_file_cannot_give(dynamic_onnx: Path):
    model = hydradet.load(dynamic_onnx)
    for kwargs in ({"conf": 0.3}, {"iou": 0.7}, {"max_det": 100}, {"imgsz": 160}):
        with pytest.raises(SettingError, match="re-export"):
            model.predict(synthetic_images(1), **kwargs)


def test_cli_export_then_predict_with_the_onnx_file_matches_the_weights(weights: Path, tmp_path: Path, capsys):
    onnx_path = tmp_path / "m.onnx"
    args = ["export", str(weights), "--format", "onnx", "--conf", "person=0.7,animal=0.5", "--out", str(onnx_path)]
    assert main([*args, "--dynamic-batch"]) == 0
    assert "opset 17" in capsys.readouterr().out
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, a in enumerate(synthetic_images(3)):
        Image.fromarray(a).save(folder / f"im{i}.png")
    (folder / "notes.txt").write_text("not an image: the folder scan skips it")
    records = {}
    for name, model_file in (("pt", weights), ("onnx", onnx_path)):
        out = tmp_path / name
        conf = ["--conf", "person=0.8,animal=0.6"]
        assert main(["predict", str(model_file), str(folder), *conf, "--out", str(out)]) == 0
        records[name] = json.loads((out / "predictions.json").read_text())
    assert len(records["pt"]) == 3
    for a, b in zip(records["pt"], records["onnx"], strict=True):
        for h in ("person", "animal"):
            assert [d["class"] for d in a["heads"][h]] == [d["class"] for d in b["heads"][h]]
            assert np.allclose([d["box"] for d in a["heads"][h]], [d["box"] for d in b["heads"][h]], atol=0.05)


def test_eager_nms_of_decoded_outputs_equals_the_heads_postprocess():
    """The raw-export path and the ONNX graph follow this definition; if postprocess changes, this fails."""
    net = spread_model()
    x = torch.stack([letterbox(torch.from_numpy(a).permute(2, 0, 1), 128)[0] for a in synthetic_images(3)]) / 255
    with torch.no_grad():
        out = net(x)["animal"]
        ours = select(*decode(out), conf=0.3, iou=0.4, max_det=20, pre_nms=50)
        theirs = net.heads["animal"].postprocess(out, 0.3, 0.4, 20, pre_nms=50)
    for a, b in zip(ours, theirs, strict=True):
        assert len(b.scores) > 0
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
