"""`eval.max_det` means what pycocotools' maxDets means: the detections per image that the metrics count. On images
with more objects than 100 (crowds, shelves, aerial photos), pycocotools' default maxDets [1, 10, 100] would count
only the first 100 of the eval.max_det detections kept, and recall and mAP would drop for no reason a user set."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn

from hydradet.config import load_config
from hydradet.data.dataset import SourceDataset
from hydradet.eval.coco_map import ImageBoxes, coco_evaluation
from hydradet.eval.evaluate import evaluate
from hydradet.model.detect_head import Detections

GRID = 13  # 13 x 13 = 169 objects per image, of two classes (pycocotools counts maxDets per image and class)


def _crowded(seed: int, n_images: int = 3) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """Ground truth on a grid, and per image a noisy hit for most objects, misses and false positives."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(n_images):
        xy = np.stack(np.meshgrid(np.arange(GRID), np.arange(GRID)), -1).reshape(-1, 2) * 50.0 + 5
        sizes = rng.uniform(8, 45, (len(xy), 2))  # small and medium (COCO's areas), to exercise by-size AP
        boxes = np.concatenate([xy, xy + sizes], 1).astype(np.float32)
        labels = (rng.random(len(boxes)) < 0.15).astype(np.int64)  # class 0 ~140 per image: past 100 of one class
        gts.append(ImageBoxes(boxes, labels))
        hit = rng.random(len(boxes)) < 0.9
        jitter = rng.normal(0, 2.0, (int(hit.sum()), 4)).astype(np.float32)
        fp = rng.uniform(0, GRID * 50, (40, 2)).astype(np.float32)
        fp_boxes = np.concatenate([fp, fp + 15], 1)
        pb = np.concatenate([boxes[hit] + jitter, fp_boxes])
        pl = np.concatenate([labels[hit], rng.integers(0, 2, len(fp))])
        preds.append(ImageBoxes(pb, pl, rng.random(len(pb))))
    return gts, preds


def _pycocotools(gts: list[ImageBoxes], preds: list[ImageBoxes], max_dets: list[int]) -> COCOeval:
    """pycocotools on its own, fed its own JSON structures, with the maxDets given."""
    images = [{"id": i + 1, "width": 700, "height": 700} for i in range(len(gts))]
    anns, dets = [], []
    for i, (g, p) in enumerate(zip(gts, preds, strict=True), 1):
        for b, c in zip(g.boxes.tolist(), g.labels.tolist(), strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c + 1, "bbox": [b[0], b[1], w, h]})
            anns[-1] |= {"area": w * h, "iscrowd": 0}
        for b, c, s in zip(p.boxes.tolist(), p.labels.tolist(), p.scores.tolist(), strict=True):
            dets.append(
                {"image_id": i, "category_id": c + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("max_det", [100, 300])
def test_metrics_equal_pycocotools_with_max_dets_set_to_eval_max_det_on_crowded_images(max_det):
    gts, preds = _crowded(seed=max_det)
    assert min(len(p.boxes) for p in preds) > 150  # more detections per image than pycocotools' default counts
    ours, _ = coco_evaluation(gts, preds, ["a", "b"], max_det=max_det)
    ref = _pycocotools(gts, preds, [1, 10, max_det])
    # pycocotools' summarize() takes its first number (mAP50-95) at maxDets=100 whatever maxDets holds (-1 when
    # 100 is not among them); the others at maxDets[-1]. Its own precision array, at maxDets[-1], is the reference.
    precision = ref.eval["precision"][:, :, :, 0, -1]
    assert ours["mAP50-95"] == pytest.approx(precision[precision > -1].mean(), abs=1e-12)
    if max_det == 100:
        assert ours["mAP50-95"] == pytest.approx(ref.stats[0], abs=1e-12)
    assert ours["mAP50"] == pytest.approx(ref.stats[1], abs=1e-12)
    recall = ref.eval["recall"][0, :, 0, -1]
    assert ours["recall50"] == pytest.approx(recall[recall > -1].mean(), abs=1e-12)
    for a, size in enumerate(("small", "medium"), 1):
        p = ref.eval["precision"][0, :, :, a, -1]
        assert ours[f"AP50_{size}"] == pytest.approx(p[:, (p > -1).all(0)].mean(), abs=1e-12)
    if max_det == 300:  # what the setting is for: the hits past the 100th count
        at_100 = _pycocotools(gts, preds, [1, 10, 100]).eval["recall"][0, :, 0, -1]
        assert ours["recall50"] > at_100[at_100 > -1].mean() + 0.05


class _EveryObjectHead(nn.Module):
    """A detector that finds every one of the objects it is given, best first, up to the max_det it is asked for."""

    def __init__(self, boxes: Tensor) -> None:
        super().__init__()
        self.boxes = boxes

    def postprocess(self, out: Tensor, conf: float, iou: float, max_det: int) -> list[Detections]:
        n = min(len(self.boxes), max_det)
        scores, labels = torch.linspace(1.0, 0.5, n), torch.zeros(n, dtype=torch.long)
        return [Detections(self.boxes[:n], scores, labels) for _ in out]


def test_eval_max_det_reaches_the_metrics_of_a_run(tmp_path):
    """150 objects in one image, a detector that finds them all: with eval.max_det=300 all 150 count."""
    Image.new("RGB", (320, 320)).save(tmp_path / "a.jpg")
    xy = np.stack(np.meshgrid(np.arange(15), np.arange(10)), -1).reshape(-1, 2) * 21.0 + 2
    boxes = np.concatenate([xy, xy + 16], 1)
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [*b[:2], 16, 16]} for i, b in enumerate(boxes.tolist())
    ]
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": anns, "categories": [{"id": 1, "name": "o"}]}
    (tmp_path / "val.json").write_text(json.dumps(coco))
    heads = {"things": {"task": "detect", "classes": ["o"]}}
    sources = {"s": {"format": "coco", "val": str(tmp_path / "val.json"), "labels": {"things": {"o": "o"}}}}
    cfg = load_config(
        {"heads": heads, "sources": sources},
        ["model.imgsz=320", "train.workers=0", "eval.max_det=300"],
        evaluate_only=True,
    )

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleDict({"things": _EveryObjectHead(torch.tensor(boxes, dtype=torch.float32))})

        def forward(self, images: Tensor, rows: dict) -> dict[str, Tensor]:
            return {h: images for h in rows}

    results = evaluate(Model(), cfg, [SourceDataset(cfg, "s", "val", train=False)], torch.device("cpu"))
    assert results["things"]["recall50"] == pytest.approx(1.0)
    assert results["things"]["mAP50"] == pytest.approx(1.0)
