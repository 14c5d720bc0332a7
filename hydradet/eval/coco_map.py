"""COCO mAP50-95, mAP50, AP50 by object size, recall at IoU 0.5 and the F1-optimal confidence for one head, by
pycocotools (the reference implementation, run in memory)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from hydradet.eval.curves import DetectCurves, detect_curves


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


SIZES = ("small", "medium", "large")  # COCO's area ranges: < 32^2, 32^2..96^2, > 96^2 original pixels
KEYS = ("mAP50-95", "mAP50", *(f"AP50_{s}" for s in SIZES), "recall50", "f1", "f1_conf")


MAX_DETS = 100  # pycocotools' and the COCO protocol's detections per image; `eval.max_det` (default.yaml) sets it


def coco_map(
    gts: list[ImageBoxes], preds: list[ImageBoxes], class_names: list[str], max_det: int = MAX_DETS
) -> dict[str, float]:
    """The metrics of `coco_evaluation` (every key of KEYS), without its curves."""
    return coco_evaluation(gts, preds, class_names, max_det)[0]


def coco_evaluation(
    gts: list[ImageBoxes], preds: list[ImageBoxes], class_names: list[str], max_det: int = MAX_DETS
) -> tuple[dict[str, float], DetectCurves | None]:
    """(metrics, curves). gts[i] and preds[i] are the same image. The metrics hold every key of KEYS, NaN when
    there is no ground truth; the curves (eval/curves.py: PR and per-confidence P, R, F1 per class at IoU 0.5)
    are None when there is no ground truth or no detection.

    AP50_small/medium/large: AP at IoU 0.5 over COCO's area ranges (pycocotools' areaRng, in original pixels),
    mean over the classes with ground truth of that size. recall50: the share of ground-truth boxes that a
    detection matches at IoU >= 0.5 (up to max_det per image), mean over the classes with ground truth; pass only the
    detections above a confidence to get the recall a user sees at that threshold (mAP ranks by score and does
    not). f1_conf: the confidence that maximises F1 at IoU 0.5 (mean over classes), as Ultralytics picks the
    threshold it reports; f1: that maximum.

    max_det: pycocotools' maxDets, [1, 10, max_det]: every metric here counts up to max_det detections per image
    (and class, as pycocotools counts them), the best-scored first. `eval.max_det` is passed here as well as to
    the heads' post-processing, so that a setting above 100 counts every detection it keeps (pycocotools'
    default would silently count only 100: on crowded images, recall and mAP would fall for no reason)."""
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
        return dict.fromkeys(KEYS, float("nan")), None
    dets = _as_coco(preds, with_scores=True)
    if not dets:
        return {**dict.fromkeys(KEYS, 0.0), "f1_conf": float("nan")}, None
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": categories}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_det]
        ev.evaluate()
        ev.accumulate()
    # eval["recall"]: [IoU thresholds, classes, areas, maxDets]; -1 marks a class without ground truth.
    recall = ev.eval["recall"][0, :, 0, -1]
    # pycocotools' summarize() would give these as stats[0] and stats[1], but its stats[0] is taken at maxDets=100
    # whatever maxDets holds (-1 when 100 is not among them): so they are read from its precision array here, at
    # maxDets[-1], as its stats[1] is. Equal to summarize()'s at the default (tests/test_eval_protocol.py).
    precision = ev.eval["precision"][:, :, :, 0, -1]  # [IoU thresholds, recall points, classes], all areas
    out = {"mAP50-95": _mean_valid(precision), "mAP50": _mean_valid(precision[0])}
    # eval["precision"]: [IoU thresholds, recall points, classes, areas (all, small, medium, large), maxDets].
    for a, size in enumerate(SIZES, 1):
        p = ev.eval["precision"][0, :, :, a, -1]
        valid = p[:, (p > -1).all(0)]
        out[f"AP50_{size}"] = float(valid.mean()) if valid.size else float("nan")
    out["recall50"] = float(recall[recall > -1].mean())
    curves = detect_curves(ev, class_names)
    out["f1"], out["f1_conf"] = _best_f1(curves)
    return out, curves


def _mean_valid(precision: np.ndarray) -> float:
    """pycocotools' summary of a precision array: the mean of its entries that are not -1 (no ground truth)."""
    valid = precision[precision > -1]
    return max(0.0, float(valid.mean())) if valid.size else 0.0


def _best_f1(curves: DetectCurves) -> tuple[float, float]:
    """(max F1 at IoU 0.5, the confidence giving it): F1 averaged over the classes with ground truth, on a grid of
    confidences c, keeping detections scored > c as predict does. Ties (a plateau between a hit's score and the
    next false positive's) resolve to the middle of the widest run of best values, away from both edges.

    Read from pycocotools' per-image matches (evalImgs, all areas, maxDets 100; eval/curves.py), not its precision
    array: that one is interpolated (the best precision at any higher recall), blind to false positives after the
    last hit. Neither pycocotools nor torchvision picks a threshold; Ultralytics does the same on its own matching."""
    if not curves.has_truth.any():
        return float("nan"), float("nan")
    f1, grid = curves.mean(curves.f1), curves.conf
    best = np.isclose(f1, f1.max(), rtol=0, atol=1e-9)
    # The widest run of best values, then its middle.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], best.astype(int), [0]])))
    starts, stops = edges[::2], edges[1::2]
    widest = int(np.argmax(stops - starts))
    return float(f1.max()), float(grid[(starts[widest] + stops[widest] - 1) // 2])


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
