"""One detect head's curves at IoU 0.5, per class, from a finished pycocotools evaluation: precision against
recall (PR_curve_<head>.png) and precision, recall and F1 against the confidence threshold (F1_curve_<head>.png,
and the F1-optimal conf that predict uses: coco_map.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval

CONF_GRID = np.linspace(0, 1, 1001)  # confidence thresholds of the per-score curves


@dataclass
class DetectCurves:
    """Rows are the head's classes, in order; a class without ground truth has a row of NaN.

    `precision` is pycocotools' own (eval["precision"] at IoU 0.5, all areas, maxDets[-1] detections per image): at each
    recall point, the best precision at that recall or above (interpolated), so its mean over the recall points
    is the class's AP50. `p`, `r`, `f1` keep the detections scored above each threshold of `conf`, as predict
    does, counted from pycocotools' per-image matches (not interpolated: a false positive after the last hit
    lowers them). With nothing kept, precision is 1 (as Ultralytics draws it) and F1 is 0."""

    names: list[str]
    recall: np.ndarray  # (101,) pycocotools' recall points 0, 0.01, ..., 1
    precision: np.ndarray  # (C, 101) interpolated precision at those points
    conf: np.ndarray  # (T,) confidence thresholds: CONF_GRID
    p: np.ndarray  # (C, T) precision of the detections scored > conf
    r: np.ndarray  # (C, T) recall (share of ground-truth boxes matched at IoU >= 0.5)
    f1: np.ndarray  # (C, T) 2PR / (P + R) = 2TP / (2TP + FP + FN)

    @property
    def has_truth(self) -> np.ndarray:
        """(C,) bool: the classes with ground truth, over which "all classes" averages."""
        return ~np.isnan(self.f1).all(1)

    @property
    def ap50(self) -> np.ndarray:
        """(C,) AP at IoU 0.5 per class (NaN without ground truth)."""
        return self.precision.mean(1)

    def mean(self, curve: np.ndarray) -> np.ndarray:
        """The mean over the classes with ground truth of a (C, N) curve: (N,); NaN when no class has any."""
        rows = curve[self.has_truth]
        return rows.mean(0) if len(rows) else np.full(curve.shape[1], np.nan)


def detect_curves(ev: COCOeval, names: list[str]) -> DetectCurves:
    """The curves of an evaluated and accumulated COCOeval (ev.evaluate(); ev.accumulate()), counting up to its
    maxDets[-1] detections per image and class (evalImgs holds no more)."""
    precision = ev.eval["precision"][0, :, :, 0, -1].T.astype(np.float64)  # [IoU, recall, class, area, maxDets]
    precision[precision < 0] = np.nan  # -1 marks a class without ground truth
    n_cls, n_area, n_img = len(ev.params.catIds), len(ev.params.areaRng), len(ev.params.imgIds)
    p, r, f1 = (np.full((n_cls, len(CONF_GRID)), np.nan) for _ in range(3))
    for k in range(n_cls):
        # evalImgs is ordered [class][area][image]; area 0 is "all".
        per_img = [e for e in ev.evalImgs[k * n_area * n_img : k * n_area * n_img + n_img] if e is not None]
        n_gt = sum(int((~np.asarray(e["gtIgnore"], bool)).sum()) for e in per_img)
        if n_gt == 0:
            continue
        scores = np.concatenate([np.asarray(e["dtScores"]) for e in per_img] or [np.zeros(0)])
        matched = np.concatenate([e["dtMatches"][0] > 0 for e in per_img] or [np.zeros(0, bool)])
        ignored = np.concatenate([e["dtIgnore"][0].astype(bool) for e in per_img] or [np.zeros(0, bool)])
        scores, matched = scores[~ignored], matched[~ignored]  # detections on crowds count neither way
        kept = scores[None, :] > CONF_GRID[:, None]  # (T, detections)
        tp = (kept & matched[None]).sum(1)
        n_kept = kept.sum(1)
        p[k] = np.where(n_kept > 0, tp / np.maximum(n_kept, 1), 1.0)
        r[k] = tp / n_gt
        f1[k] = np.where(n_kept > 0, 2 * tp / np.maximum(n_kept + n_gt, 1), 0.0)
    return DetectCurves(list(names), np.asarray(ev.params.recThrs), precision, CONF_GRID.copy(), p, r, f1)
