"""Duplicate label rows (the same class and the same box, yolov5#10149, ultralytics#8515) are removed and counted,
each file named, in every reader; a near-duplicate is another object and stays. Left in, every duplicated box is
a ground truth no detection can match twice: the same predictions scored half the mAP50."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hydradet.data import records as R
from hydradet.data.coco import read_coco
from hydradet.data.voc import read_voc
from hydradet.data.yolo import read_yolo
from hydradet.eval.coco_map import ImageBoxes, coco_map

ROWS = "0 0.25 0.25 0.2 0.2\n1 0.75 0.75 0.2 0.2\n"


def _yolo(root: Path, labels: dict[str, str]) -> Path:
    for name, text in labels.items():
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (100, 80)).save(root / "images" / f"{name}.jpg")
        (root / "labels" / f"{name}.txt").write_text(text)
    (root / "data.yaml").write_text("path: .\ntrain: images\nnames: [cat, dog]\n")
    return root / "data.yaml"


def test_yolo_rows_given_twice_are_removed_and_counted_naming_each_file_and_near_duplicates_stay(tmp_path):
    near = "0 0.25 0.25 0.2 0.2\n0 0.2501 0.25 0.2 0.2\n1 0.25 0.25 0.2 0.2\n"  # moved a hair; another class
    data = read_yolo(_yolo(tmp_path, {"a": ROWS * 2, "b": ROWS * 3, "c": near}), "train")
    assert [len(r.boxes) for r in data.records] == [2, 2, 3]
    assert data.skipped == {R.DUPLICATE_ROW: 2 + 4}
    a, b = (str(tmp_path / "labels" / f"{n}.txt") for n in "ab")
    assert data.examples[R.DUPLICATE_ROW] == [f"{a}: 2 rows (lines 3, 4)", f"{b}: 4 rows (lines 3, 4, 5, 6)"]


def test_duplicated_rows_no_longer_halve_the_map_of_the_same_predictions(tmp_path):
    data = read_yolo(_yolo(tmp_path, {"a": ROWS * 2}), "train")
    rec = data.records[0]
    labels = np.array([data.class_names.index(c) for c in rec.classes])
    gt = ImageBoxes(rec.boxes, labels)
    exact = ImageBoxes(np.array([[15, 12, 35, 28], [65, 52, 85, 68]], np.float32), np.array([0, 1]), np.ones(2))
    assert coco_map([gt], [exact], data.class_names)["mAP50"] == pytest.approx(1.0)


def test_coco_annotations_given_twice_are_removed_and_counted(tmp_path):
    Image.new("RGB", (100, 80)).save(tmp_path / "a.jpg")
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},  # the same
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20]},  # another class
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20.5]},  # another box
    ]
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": anns, "categories": cats}))
    data = read_coco(path)
    assert data.records[0].classes == ["cat", "dog", "cat"]
    assert data.skipped == {R.DUPLICATE_ROW: 1}
    assert data.examples[R.DUPLICATE_ROW] == [f"{path} (a.jpg): 1 row (annotation id 2)"]


def test_voc_objects_given_twice_are_removed_and_counted(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (50, 40)).save(tmp_path / "JPEGImages" / "a.jpg")
    obj = "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>"
    (tmp_path / "Annotations" / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{obj * 2}</annotation>")
    data = read_voc(tmp_path)
    assert data.records[0].classes == ["cat"] and data.skipped == {R.DUPLICATE_ROW: 1}
    assert data.examples[R.DUPLICATE_ROW] == [f"{tmp_path / 'Annotations' / 'a.xml'}: 1 row (object 2)"]
