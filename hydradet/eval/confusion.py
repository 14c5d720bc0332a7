"""Confusion matrices (confusion_matrix_<head>.png): a detect head's, with a background row and column, and a
classify head's. Rows are predicted classes, columns true classes, as Ultralytics lays them out."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from hydradet.eval.coco_map import ImageBoxes

DEFAULT_CONF = 0.25  # Ultralytics' threshold for its confusion matrix, for a head without a calibrated conf


def detect_confusion(
    gts: list[ImageBoxes], preds: list[ImageBoxes], n_classes: int, conf: float, iou: float = 0.5
) -> np.ndarray:
    """(C + 1, C + 1) counts over the images; index C is background. gts[i] and preds[i] are the same image.

    Ultralytics' matching (ConfusionMatrix.process_batch): detections scored > conf; every (truth, detection) pair
    with IoU > iou, whatever their classes (so that a dog found as a bird lands off the diagonal), kept greedily
    by IoU, each truth and each detection once. A matched pair counts at [detected class, true class]; a missed
    truth at [background, true class]; an unmatched detection at [detected class, background], unless it lies on an
    ignore region (crowd / difficult: half its area or more inside one, pycocotools' crowd rule), which, as in
    the mAP, counts neither way."""
    m = np.zeros((n_classes + 1, n_classes + 1), np.int64)
    for gt, pred in zip(gts, preds, strict=True):
        keep = pred.scores > conf if pred.scores is not None else np.ones(len(pred.labels), bool)
        d_boxes, d_cls = torch.as_tensor(pred.boxes[keep], dtype=torch.float32), pred.labels[keep].astype(int)
        g_boxes, g_cls = torch.as_tensor(gt.boxes, dtype=torch.float32), gt.labels.astype(int)
        pairs = _greedy_pairs(box_iou(g_boxes.reshape(-1, 4), d_boxes.reshape(-1, 4)).numpy(), iou)
        matched_gt = dict(pairs)
        for i, c in enumerate(g_cls):
            m[d_cls[matched_gt[i]] if i in matched_gt else n_classes, c] += 1
        on_ignore = _on_ignore(d_boxes, gt.ignore)
        taken = {j for _, j in pairs}
        for j, c in enumerate(d_cls):
            if j not in taken and not on_ignore[j]:
                m[c, n_classes] += 1
    return m


def classify_confusion(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: [predicted class, true class] per image; truth and predicted are (N,) class ids."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (predicted.astype(int), truth.astype(int)), 1)
    return m


def _greedy_pairs(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(truth, detection) pairs with IoU > threshold, highest IoU first, each truth and detection at most once."""
    gi, dj = np.nonzero(iou > threshold)
    order = np.argsort(-iou[gi, dj], kind="stable")
    used_g, used_d, pairs = set(), set(), []
    for g, d in zip(gi[order].tolist(), dj[order].tolist(), strict=True):
        if g not in used_g and d not in used_d:
            used_g.add(g)
            used_d.add(d)
            pairs.append((g, d))
    return pairs


def _on_ignore(boxes: torch.Tensor, ignore: np.ndarray | None) -> np.ndarray:
    """(D,) bool: half or more of each box's area inside one ignore region."""
    if ignore is None or not len(ignore) or not len(boxes):
        return np.zeros(len(boxes), bool)
    reg = torch.as_tensor(ignore, dtype=torch.float32).reshape(-1, 4)
    lt = torch.maximum(boxes[:, None, :2], reg[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], reg[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1).clamp(min=1e-9)
    return ((inter / area[:, None]) >= 0.5).any(1).numpy()
