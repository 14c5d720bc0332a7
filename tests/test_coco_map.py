"""Our per-head COCO metrics are pycocotools' numbers, on a hand-made case with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hydradet.eval.coco_map import ImageBoxes, coco_map

# Three images, two classes. Predictions: exact hits, a shifted box (IoU ~0.68), a wrong class, a duplicate,
# a false positive and a miss, with scores that interleave hits and misses.
GT = [
    ImageBoxes(np.array([[10, 10, 50, 60], [60, 20, 90, 80]], np.float32), np.array([0, 1])),
    ImageBoxes(np.array([[5, 5, 25, 45]], np.float32), np.array([0])),
    ImageBoxes(np.array([[30, 30, 70, 70], [0, 0, 20, 20]], np.float32), np.array([1, 0])),
]
PRED = [
    ImageBoxes(
        np.array([[10, 10, 50, 60], [65, 25, 95, 85], [12, 11, 50, 60]], np.float32),
        np.array([0, 1, 0]),
        np.array([0.9, 0.6, 0.3]),
    ),
    ImageBoxes(np.array([[5, 5, 25, 45], [40, 40, 60, 60]], np.float32), np.array([1, 0]), np.array([0.8, 0.7])),
    ImageBoxes(np.array([[30, 30, 70, 70]], np.float32), np.array([1]), np.array([0.95])),
]


def _pycocotools_reference(tmp_path) -> tuple[float, float]:
    images = [{"id": i + 1, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in range(len(GT))]
    anns, dets = [], []
    for i, (g, p) in enumerate(zip(GT, PRED, strict=True), 1):
        for b, c in zip(g.boxes, g.labels, strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            bbox = [float(b[0]), float(b[1]), w, h]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1, "bbox": bbox, "area": w * h})
            anns[-1]["iscrowd"] = 0
        for b, c, s in zip(p.boxes, p.labels, p.scores, strict=True):
            bbox = [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
            dets.append({"image_id": i, "category_id": int(c) + 1, "bbox": bbox, "score": float(s)})
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    gt_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt_file.write_text(json.dumps(dets))
    gt = COCO(str(gt_file))
    ev = COCOeval(gt, gt.loadRes(str(dt_file)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def test_coco_map_equals_pycocotools_on_files(tmp_path):
    ref_map, ref_map50 = _pycocotools_reference(tmp_path)
    ours = coco_map(GT, PRED, ["a", "b"])
    assert ours["mAP50-95"] == pytest.approx(ref_map, abs=1e-12)
    assert ours["mAP50"] == pytest.approx(ref_map50, abs=1e-12)
    assert 0.2 < ours["mAP50"] < 1.0  # a case that is neither trivial nor empty


def test_perfect_predictions_score_one_and_no_predictions_zero():
    perfect = [ImageBoxes(g.boxes, g.labels, np.ones(len(g.boxes))) for g in GT]
    got = coco_map(GT, perfect, ["a", "b"])
    assert {k: got[k] for k in ("mAP50-95", "mAP50", "recall50", "f1")} == dict.fromkeys(
        ("mAP50-95", "mAP50", "recall50", "f1"), 1.0
    )
    empty = [ImageBoxes(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0)) for _ in GT]
    got = coco_map(GT, empty, ["a", "b"])
    assert {k: got[k] for k in ("mAP50-95", "mAP50", "recall50", "f1")} == dict.fromkeys(
        ("mAP50-95", "mAP50", "recall50", "f1"), 0.0
    )
    assert np.isnan(got["f1_conf"])  # no detection: no threshold to recommend


def test_recall50_counts_matched_ground_truth_per_class_whatever_the_scores():
    # Class a: one of its two boxes found; class b: its one box found. Low scores do not lower recall.
    gt = [ImageBoxes(np.array([[0, 0, 10, 10], [50, 50, 70, 70], [20, 20, 40, 40]], np.float32), np.array([0, 0, 1]))]
    found = [
        ImageBoxes(np.array([[0, 0, 10, 11], [20, 20, 40, 40]], np.float32), np.array([0, 1]), np.array([0.01, 0.02]))
    ]
    assert coco_map(gt, found, ["a", "b"])["recall50"] == pytest.approx((0.5 + 1.0) / 2)


def test_a_detection_on_an_ignore_region_is_neither_rewarded_nor_punished():
    crowd = [
        ImageBoxes(g.boxes, g.labels, ignore=np.array([[60, 60, 100, 100]], np.float32), ignore_labels=np.array([0]))
        if i == 1
        else g
        for i, g in enumerate(GT)
    ]
    on_crowd = [
        ImageBoxes(np.vstack([p.boxes, [[61, 61, 99, 99]]]), np.append(p.labels, 0), np.append(p.scores, 0.99))
        if i == 1
        else p
        for i, p in enumerate(PRED)
    ]
    base = coco_map(GT, PRED, ["a", "b"])
    assert coco_map(crowd, on_crowd, ["a", "b"]) == pytest.approx(
        base, nan_ok=True
    )  # ignored: same score as without the detection
    assert coco_map(GT, on_crowd, ["a", "b"])["mAP50"] < base["mAP50"]  # without the region: a false positive


def test_ap50_by_size_scores_each_coco_area_range_on_its_own():
    # A small box (20x20 = 400 < 32^2) that is found, and a large one (100x100 > 96^2) that is missed.
    gt = [ImageBoxes(np.array([[0, 0, 20, 20], [100, 100, 200, 200]], np.float32), np.array([0, 0]))]
    found = [ImageBoxes(np.array([[0, 0, 20, 20]], np.float32), np.array([0]), np.array([0.9]))]
    got = coco_map(gt, found, ["a"])
    assert got["AP50_small"] == pytest.approx(1.0)
    assert got["AP50_large"] == pytest.approx(0.0)
    assert np.isnan(got["AP50_medium"])  # no ground truth of that size


def test_f1_conf_is_the_threshold_that_keeps_the_hits_and_drops_the_false_positives():
    # Four objects: hits scored 0.9, 0.8, 0.7; false positives at 0.6 and 0.2; one object never found.
    # F1 peaks keeping exactly the three hits (P 1, R 0.75, F1 0.857): a conf in [0.6, 0.7) (kept: score > conf),
    # picked in the middle of that plateau.
    gt = [ImageBoxes(np.array([[i * 30, 0, i * 30 + 20, 20] for i in range(4)], np.float32), np.zeros(4, int))]
    boxes = [[0, 0, 20, 20], [30, 0, 50, 20], [60, 0, 80, 20], [0, 50, 20, 70], [30, 50, 50, 70]]
    pred = [ImageBoxes(np.array(boxes, np.float32), np.zeros(5, int), np.array([0.9, 0.8, 0.7, 0.6, 0.2]))]
    got = coco_map(gt, pred, ["a"])
    assert got["f1"] == pytest.approx(2 * 0.75 / 1.75, abs=1e-6)
    assert got["f1_conf"] == pytest.approx(0.65, abs=0.002)
