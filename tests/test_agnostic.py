"""Class-agnostic NMS within a head (`predict.agnostic`): where two classes of one head claim one object, agnostic
keeps one box and per-class NMS keeps two; the same in the head's postprocess, the eager NMS of decoded outputs,
the ONNX NonMaxSuppression graph, `Model.predict`, an ONNX export (baked into its metadata) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from test_infer_api import assert_same, spread_model, synthetic_images, write_weights
from torch import nn
from torchvision.ops import box_iou

import hydradet
from hydradet.cli import main
from hydradet.export import export_onnx
from hydradet.export.nms import decode, nms_padded, select
from hydradet.infer.settings import SettingError, parse_per_head_flag
from hydradet.model.detect_head import DetectHead, DetectOutput


def two_classes_on_one_object() -> DetectOutput:
    """Two locations 2 px apart whose boxes overlap (IoU 0.90): class 0 scores 0.98 at one, class 1 0.95 at the
    other; the third class nowhere."""
    logits = torch.full((1, 2, 3), -10.0)
    logits[0, 0, 0], logits[0, 1, 1] = 4.0, 3.0
    return DetectOutput(
        cls_logits=logits,
        box_ltrb=torch.full((1, 2, 4), 20.0),  # 40 x 40 px boxes around each location
        centerness=torch.full((1, 2), 10.0),
        points=torch.tensor([[50.0, 50.0], [52.0, 50.0]]),
        strides=torch.tensor([8.0, 8.0]),
    )


@pytest.mark.parametrize("agnostic, expected", [(False, [0, 1]), (True, [0])])
def test_two_classes_on_one_object_agnostic_keeps_one(agnostic: bool, expected: list[int]):
    out = two_classes_on_one_object()
    head = DetectHead(8, 3, 1, (8,))
    dets = head.postprocess(out, conf=0.5, iou=0.5, max_det=10, agnostic=agnostic)[0]
    assert dets.labels.tolist() == expected
    eager = select(*decode(out), conf=0.5, iou=0.5, max_det=10, agnostic=agnostic)[0]
    assert eager.labels.tolist() == expected and torch.allclose(eager.boxes, dets.boxes)
    _, scores, ids = nms_padded(*decode(out), conf=0.5, iou=0.5, max_det=4, agnostic=agnostic)
    assert ids[0].tolist() == [*expected, *[-1] * (4 - len(expected))]
    torch.testing.assert_close(scores[0, : len(expected)], dets.scores)


class NmsOnly(nn.Module):
    def __init__(self, agnostic: bool) -> None:
        super().__init__()
        self.agnostic = agnostic

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return nms_padded(boxes, scores, conf=0.5, iou=0.5, max_det=4, agnostic=self.agnostic)


@pytest.mark.parametrize("agnostic, expected", [(False, [0, 1, -1, -1]), (True, [0, -1, -1, -1])])
def test_the_onnx_nms_graph_keeps_one_box_when_agnostic(tmp_path: Path, agnostic: bool, expected: list[int]):
    boxes, scores = decode(two_classes_on_one_object())
    path = tmp_path / "nms.onnx"
    torch.onnx.export(
        NmsOnly(agnostic), (boxes, scores), str(path), dynamo=False, opset_version=17, input_names=["b", "s"]
    )
    got = ort.InferenceSession(str(path)).run(None, {"b": boxes.numpy(), "s": scores.numpy()})
    assert got[2][0].tolist() == expected
    kept = len([i for i in expected if i >= 0])
    np.testing.assert_allclose(got[1][0, :kept], scores.max(2).values[0, :kept].numpy(), rtol=1e-6)


def overlaps_across_classes(result, head: str, iou: float) -> int:
    """Pairs of kept boxes of different classes that overlap more than the NMS IoU."""
    r = result.heads[head]
    ious = box_iou(torch.from_numpy(r.boxes), torch.from_numpy(r.boxes))
    other = torch.from_numpy(r.class_ids[:, None] != r.class_ids[None, :])
    return int(((ious > iou) & other).sum()) // 2


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_weights(tmp_path_factory.mktemp("w") / "model.safetensors")


def test_predict_agnostic_per_head_and_through_an_onnx_export(weights: Path, tmp_path: Path):
    model = hydradet.load(weights)
    images = synthetic_images(3)
    per_class = model.predict(images, conf=0.5, iou=0.5)
    agnostic = model.predict(images, conf=0.5, iou=0.5, agnostic={"animal": True})
    # The model has competing classes to begin with (else the test would prove nothing) ...
    assert sum(overlaps_across_classes(r, "animal", 0.5) for r in per_class) > 0
    # ... and agnostic NMS leaves none, on the head it was asked for only.
    assert sum(overlaps_across_classes(r, "animal", 0.5) for r in agnostic) == 0
    assert sum(len(r.heads["animal"]) for r in agnostic) < sum(len(r.heads["animal"]) for r in per_class)
    assert_same([_only(r, "person") for r in agnostic], [_only(r, "person") for r in per_class])

    path = export_onnx(spread_model(), tmp_path / "agnostic.onnx", conf=0.5, agnostic={"animal": True})
    onnx_model = hydradet.load(path)
    nms = json.loads(dict(onnx_model.backend._session(("person", "animal")).get_modelmeta().custom_metadata_map)["nms"])
    assert nms["animal"]["agnostic"] is True and nms["person"]["agnostic"] is False
    assert_same(onnx_model.predict(images), model.predict(images, conf=0.5, agnostic={"animal": True}))
    with pytest.raises(SettingError, match="agnostic"):  # per-class NMS cannot be had from this file
        onnx_model.predict(images, agnostic=False)


def _only(result, head: str):
    result.heads = {head: result.heads[head]}
    return result


def test_agnostic_flags_parse_like_thresholds():
    assert parse_per_head_flag("true") is True and parse_per_head_flag("off") is False
    assert parse_per_head_flag("person=true,animal=false") == {"person": True, "animal": False}
    for bad in ("maybe", "person=2", "true,person=false"):
        with pytest.raises(SettingError, match="person=true,animal=false"):
            parse_per_head_flag(bad)


def test_cli_predict_agnostic(weights: Path, tmp_path: Path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, a in enumerate(synthetic_images(3)):
        Image.fromarray(a).save(folder / f"im{i}.png")
    counts = {}
    for flag in ([], ["--agnostic"]):
        out = tmp_path / f"out{len(flag)}"
        assert main(["predict", str(weights), str(folder), "--conf", "0.5", "--out", str(out), *flag]) == 0
        records = json.loads((out / "predictions.json").read_text())
        counts[bool(flag)] = sum(len(r["heads"]["animal"]) for r in records)
    assert counts[True] < counts[False]
    bad = ["predict", str(weights), str(folder), "--agnostic", "bird=true", "--out", str(tmp_path / "bad")]
    assert main(bad) == 2  # no head named bird
