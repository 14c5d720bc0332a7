"""What the readers keep but count, shown in the start-of-training summary and in `data check`: YOLO segment polygon
lines read as their bounding box; label files that match no image; an annotation's stated image size that is
not the file's (a resize: boxes scaled; another aspect ratio: the stated size is wrong and the boxes are kept)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_bad_files import painted, red_box

from hydradet.cli import main
from hydradet.config import load_config
from hydradet.data import records as R
from hydradet.data.coco import read_coco
from hydradet.data.dataset import SourceDataset
from hydradet.data.totals import describe_data
from hydradet.data.voc import read_voc
from hydradet.data.yolo import read_yolo


def _yolo(root: Path, labels: dict[str, str], images: tuple[str, ...] = ("a.jpg",), size=(100, 50)) -> Path:
    for name in images:
        (root / "images" / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(root / "images" / "train" / name)
    for rel, text in labels.items():
        (root / "labels" / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / rel).write_text(text)
    path = root / "data.yaml"
    path.write_text("path: .\ntrain: images/train\nval: images/train\nnames: [cat, dog]\n")
    return path


# ---------------------------------------------------------------- polygons
def test_a_segment_polygon_line_is_read_as_its_bounding_box_and_counted(tmp_path):
    # A triangle (x 0.1..0.5, y 0.2..0.8), a box, and a pentagon partly outside the image; 100x50 pixels.
    text = "1 0.1 0.2 0.5 0.2 0.3 0.8\n0 0.5 0.5 0.2 0.2\n0 0.6 0.1 0.9 0.1 1.1 0.5 0.9 0.9 0.6 0.9\n"
    data = read_yolo(_yolo(tmp_path, {"a.txt": text}), "train")
    (rec,) = data.records
    assert rec.classes == ["dog", "cat", "cat"]
    np.testing.assert_allclose(rec.boxes, [[10, 10, 50, 40], [40, 20, 60, 30], [60, 5, 100, 45]], atol=1e-4)
    lbl = tmp_path / "labels" / "train" / "a.txt"
    assert data.warnings == {R.POLYGON_AS_BOX: 2, R.BOX_CLIPPED: 1}
    assert data.examples[R.POLYGON_AS_BOX] == [f"{lbl}:1", f"{lbl}:3"]
    assert data.examples[R.BOX_CLIPPED] == [f"{lbl}:3"]


def test_polygons_are_counted_in_the_training_summary_and_data_check(tmp_path, capsys):
    data = _yolo(tmp_path / "d", {"a.txt": "0 0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4\n", "orphan.txt": "0 .5 .5 .1 .1\n"})
    cfg_path = tmp_path / "cfg.yaml"
    heads = {"pets": {"task": "detect", "classes": ["cat"]}}
    sources = {"s": {"format": "yolo", "train": str(data), "labels": {"pets": {"cat": "cat"}}}}
    cfg_path.write_text(yaml.safe_dump({"heads": heads, "sources": sources}))
    cfg = load_config(cfg_path)
    summary = "\n".join(describe_data(cfg, [SourceDataset(cfg, "s", "train", train=False)], []))
    lbl = tmp_path / "d" / "labels" / "train"
    assert f"warning: 1 x {R.POLYGON_AS_BOX}, e.g. {lbl / 'a.txt'}:1" in summary
    assert f"skipped: 1 x {R.LABEL_ORPHAN}, e.g. {lbl / 'orphan.txt'}" in summary
    assert main(["data", "check", str(cfg_path), "--out", str(tmp_path / "check")]) == 0
    report = (tmp_path / "check" / "report.txt").read_text()
    assert f"  warning: 1 x {R.POLYGON_AS_BOX}\n      {lbl / 'a.txt'}:1\n" in report
    assert f"  skipped: 1 x {R.LABEL_ORPHAN}\n      {lbl / 'orphan.txt'}\n" in report
    assert report.endswith("no errors\n")
    capsys.readouterr()


# ---------------------------------------------------------------- orphan label files
def test_label_files_matching_no_image_are_counted_and_named_in_folders_and_lists(tmp_path):
    labels = {"a.txt": "0 .5 .5 .1 .1\n", "b.txt": "0 .5 .5 .1 .1\n", "c.txt": "", "sub/d.txt": "", "sub/e.txt": ""}
    labels["classes.txt"] = "cat\ndog\n"  # LabelImg's class list beside the labels: not a label file
    data = _yolo(tmp_path, labels, images=("a.jpg", "c.png", "sub/d.jpg"))
    lbl = tmp_path / "labels" / "train"
    split = read_yolo(data, "train")
    assert split.skipped == {R.LABEL_ORPHAN: 2} and len(split.records) == 3
    assert split.examples[R.LABEL_ORPHAN] == [str(lbl / "b.txt"), str(lbl / "sub" / "e.txt")]

    # A list names some images of a folder: labels of the folder's other images are not orphans, b's still is.
    (tmp_path / "some.txt").write_text("images/train/a.jpg\n")
    data.write_text(data.read_text().replace("val: images/train", "val: some.txt"))
    val = read_yolo(data, "val")
    assert len(val.records) == 1 and val.skipped == {R.LABEL_ORPHAN: 1}
    assert val.examples[R.LABEL_ORPHAN] == [str(lbl / "b.txt")]


def test_a_broken_image_does_not_make_its_label_an_orphan(tmp_path):
    data = _yolo(tmp_path, {"a.txt": "0 .5 .5 .1 .1\n", "bad.txt": "0 .5 .5 .1 .1\n"})
    (tmp_path / "images" / "train" / "bad.jpg").write_bytes(b"")
    assert read_yolo(data, "train").skipped == {R.IMAGE_EMPTY: 1}


# ---------------------------------------------------------------- the stated-size rule
def _voc(root: Path, file_size: tuple[int, int], stated: tuple[int, int], red: tuple[int, int, int, int]) -> Path:
    """One image of file_size with a red rectangle at `red` (0-based xyxy), its VOC box drawn on those pixels."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    painted(file_size, red).save(root / "JPEGImages" / "a.png")
    x0, y0, x1, y1 = red
    box = f"<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"
    size = f"<size><width>{stated[0]}</width><height>{stated[1]}</height></size>"
    xml = f"<annotation><filename>a.png</filename>{size}<object><name>cat</name>{box}</object></annotation>"
    (root / "Annotations" / "a.xml").write_text(xml)
    return root


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_stated_size_with_another_aspect_ratio_is_wrong_the_boxes_stay_on_their_object(tmp_path):
    # The case: a 200x100 image whose VOC <size> says 180x100. Rescaling would move the box to IoU 0.46.
    data = read_voc(_voc(tmp_path, (200, 100), (180, 100), (100, 20, 180, 80)))
    (rec,) = data.records
    assert rec.boxes.tolist() == [[100, 20, 180, 80]] and (rec.width, rec.height) == (200, 100)
    assert data.warnings == {R.SIZE_WRONG: 1}
    assert data.examples[R.SIZE_WRONG] == [f"{tmp_path / 'JPEGImages' / 'a.png'} (annotated 180x100, file 200x100)"]
    rescaled = [100 * 200 / 180, 20, 200, 80]
    assert _iou(rescaled, [100, 20, 180, 80]) < 0.75  # what the old rule did


@pytest.mark.parametrize("stated", [(400, 200), (401, 200), (300, 151)])
def test_a_stated_size_with_the_same_aspect_ratio_within_1_percent_is_a_resize_boxes_scaled(tmp_path, stated):
    # Annotated on a bigger copy: the box at twice (or 1.5x) the file's coordinates.
    s = stated[0] / 200
    red = (50, 20, 150, 80)
    root = _voc(tmp_path, (200, 100), stated, red)
    xml = root / "Annotations" / "a.xml"
    big = [round(v * s) for v in red]
    text = xml.read_text()
    for key, old, new in zip(
        ("xmin", "ymin", "xmax", "ymax"), (51, 21, 150, 80), (big[0] + 1, big[1] + 1, *big[2:]), strict=True
    ):
        text = text.replace(f"<{key}>{old}</{key}>", f"<{key}>{new}</{key}>")
    xml.write_text(text)
    data = read_voc(root)
    assert data.warnings == {R.SIZE_MISMATCH: 1}
    np.testing.assert_allclose(data.records[0].boxes[0], red, atol=1.5)


def test_coco_follows_the_same_rule_and_the_loaded_sample_box_covers_the_red_object(tmp_path):
    # 256 x 128 files: the model's 256 px letterbox leaves them unscaled, so boxes compare with pixels exactly.
    painted((256, 128), (100, 20, 180, 80)).save(tmp_path / "a.png")
    painted((256, 128), (50, 20, 150, 80)).save(tmp_path / "b.png")
    images = [
        {"id": 1, "file_name": "a.png", "width": 230, "height": 128},  # wrong: boxes kept
        {"id": 2, "file_name": "b.png", "width": 512, "height": 256},  # resized: boxes halved
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 20, 80, 60]},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [100, 40, 200, 120]},
    ]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}))
    data = read_coco(path)
    assert data.warnings == {R.SIZE_WRONG: 1, R.SIZE_MISMATCH: 1}
    assert [r.boxes.tolist() for r in data.records] == [[[100, 20, 180, 80]], [[50, 20, 150, 80]]]

    heads = {"pets": {"task": "detect", "classes": ["cat"]}}
    source = {"format": "coco", "train": str(path), "labels": {"pets": {"cat": "cat"}}}
    cfg = load_config({"heads": heads, "sources": {"s": source}}, ["model.imgsz=256"])
    ds = SourceDataset(cfg, "s", "train", train=False)
    for i in range(2):
        sample = ds[i]
        assert sample.targets["pets"]["boxes"].tolist() == [[float(v) for v in red_box(sample.image)]]


def test_head_targets_scale_only_for_a_resize_of_the_file_after_it_was_read(tmp_path):
    painted((200, 100), (100, 20, 180, 80)).save(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "a.png", "width": 200, "height": 100}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 20, 80, 60]}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}))
    heads = {"pets": {"task": "detect", "classes": ["cat"]}}
    source = {"format": "coco", "train": str(path), "labels": {"pets": {"cat": "cat"}}}
    ds = SourceDataset(load_config({"heads": heads, "sources": {"s": source}}), "s", "train", train=False)
    assert ds.head_targets(0, (100, 50))["pets"]["boxes"].tolist() == [[50, 10, 90, 40]]  # halved: a resize
    assert ds.head_targets(0, (180, 100))["pets"]["boxes"].tolist() == [[100, 20, 180, 80]]  # not one: kept
