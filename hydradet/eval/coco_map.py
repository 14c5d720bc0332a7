"""COCO mAP50-95, mAP50 and recall at IoU 0.5 for one head, by pycocotools (the reference implementation, run in
memory)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor


@dataclass
class ImageBoxes:
    boxes: np.ndarray  # (N, 4) xyxy in original image pixels
    labels: np.ndarray  # (N,) class index
    scores: np.ndarray | None = None  # (N,) for predictions; None for ground truth
    ignore: np.ndarray | None = None  # ground truth only: (K, 4) crowd / difficult regions
    ignore_labels: np.ndarray | None = None  # (K,) their class indices

    @classmethod
    def ground_truth(cls, target: dict[str, Tensor]) -> ImageBoxes:
        """A detect head's target for one image ({"boxes", "labels"[, "ignore", "ignore_labels"]}) as numpy."""
        ignore, ignore_labels = target.get("ignore"), target.get("ignore_labels")
        return cls(
            target["boxes"].numpy(),
            target["labels"].numpy(),
            ignore=None if ignore is None else ignore.numpy(),
            ignore_labels=None if ignore_labels is None else ignore_labels.numpy(),
        )


def coco_map(gts: list[ImageBoxes], preds: list[ImageBoxes], class_names: list[str]) -> dict[str, float]:
    """gts[i] and preds[i] are the same image. Returns {"mAP50-95", "mAP50", "recall50"}; NaN when there is no
    ground truth. recall50: the share of ground-truth boxes that a detection matches at IoU >= 0.5 (up to 100
    per image), mean over the classes with ground truth; pass only the detections above a confidence to get
    the recall a user sees at that threshold (mAP ranks by score and does not)."""
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} prediction images")
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    images = [{"id": i + 1, "width": 0, "height": 0} for i in range(len(gts))]
    anns = _as_coco(gts, with_scores=False)
    # Ignore regions become iscrowd=1 annotations: pycocotools neither rewards nor punishes detections on them.
    crowds = [ImageBoxes(g.ignore, g.ignore_labels) if g.ignore is not None else _EMPTY for g in gts]
    anns += [{**a, "iscrowd": 1} for a in _as_coco(crowds, with_scores=False)]
    for k, a in enumerate(anns, 1):
        a["id"] = k
    if not any(a["iscrowd"] == 0 for a in anns):
        return {"mAP50-95": float("nan"), "mAP50": float("nan"), "recall50": float("nan")}
    dets = _as_coco(preds, with_scores=True)
    if not dets:
        return {"mAP50-95": 0.0, "mAP50": 0.0, "recall50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": categories}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # eval["recall"]: [IoU thresholds, classes, areas, maxDets]; -1 marks a class without ground truth.
    recall = ev.eval["recall"][0, :, 0, -1]
    recall50 = float(recall[recall > -1].mean())
    return {"mAP50-95": max(0.0, float(ev.stats[0])), "mAP50": max(0.0, float(ev.stats[1])), "recall50": recall50}


_EMPTY = ImageBoxes(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


def _as_coco(items: list[ImageBoxes], with_scores: bool) -> list[dict]:
    out = []
    for i, item in enumerate(items, 1):
        xywh = np.concatenate([item.boxes[:, :2], item.boxes[:, 2:] - item.boxes[:, :2]], 1) if len(item.boxes) else []
        for j in range(len(item.boxes)):
            d = {"image_id": i, "category_id": int(item.labels[j]) + 1, "bbox": [float(v) for v in xywh[j]]}
            d["area"] = d["bbox"][2] * d["bbox"][3]
            if with_scores:
                d["score"] = float(item.scores[j])  # type: ignore[index]
            else:
                d["iscrowd"] = 0
            out.append(d)
    return out
