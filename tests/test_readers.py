"""The COCO and YOLO readers give the right counts on the real files in ../shared/data, and bad label files
are refused with the file, the line and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydradet.data.coco import read_coco
from hydradet.data.records import DataError
from hydradet.data.voc import read_voc
from hydradet.data.yolo import read_yolo

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data not found at {SHARED}")


@needs_shared
def test_coco_train_counts_match_the_dataset_readme():
    split = read_coco(SHARED / "coco-train" / "instances.json")
    assert len(split.records) == 337
    assert len(split.class_names) == 80
    assert split.box_counts()["person"] == 644
    crowds = sum(len(r.ignore_classes) for r in split.records)
    assert crowds == 18  # iscrowd annotations become ignore regions, not boxes
    assert sum(len(r.classes) for r in split.records) + crowds == 2828
    animals = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
    assert sum(split.box_counts()[a] for a in animals) == 153


@needs_shared
@pytest.mark.parametrize(
    ("name", "split", "images", "boxes", "backgrounds"),
    [
        ("persons-roboflow", "train", 1745, {"person": 4935}, 0),
        ("persons-roboflow", "val", 291, {"person": 774}, 0),
        ("lions-roboflow", "train", 1000, {"Lion": 1231}, 15),
        ("lions-roboflow", "val", 250, {"Lion": 304}, 7),
    ],
)
def test_yolo_counts_match_the_dataset_readme(name, split, images, boxes, backgrounds):
    data = read_yolo(SHARED / name / "data.yaml", split)
    assert len(data.records) == images
    assert data.box_counts() == boxes
    assert sum(len(r.boxes) == 0 for r in data.records) == backgrounds
    r = next(r for r in data.records if len(r.boxes))
    assert (r.boxes[:, 2:] > r.boxes[:, :2]).all() and r.boxes[:, 2].max() <= r.width


def _yolo_set(tmp_path: Path, label_text: str) -> Path:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels" / "a.txt").write_text(label_text)
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text("path: .\ntrain: images\nnames: [cat, dog]\n")
    return yaml_path


def test_yolo_class_id_out_of_range_names_file_and_line(tmp_path):
    path = _yolo_set(tmp_path, "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"a\.txt:2: class id 5 out of range 0\.\.1"):
        read_yolo(path, "train")


def test_yolo_names_with_string_ids_as_json_writes_them_are_read_in_id_order(tmp_path):
    path = _yolo_set(tmp_path, "1 0.5 0.5 0.5 0.5\n")
    path.write_text('{"path": ".", "train": "images", "names": {"1": "dog", "0": "cat"}}')  # JSON is YAML
    data = read_yolo(path, "train")
    assert data.class_names == ["cat", "dog"] and data.records[0].classes == ["dog"]
    twelve = {str(i): f"c{i}" for i in range(12)}  # ids past 9 sort as numbers, not as text
    path.write_text(json.dumps({"path": ".", "train": "images", "names": twelve}))
    assert read_yolo(path, "train").class_names == [f"c{i}" for i in range(12)]


def test_yolo_boxes_are_scaled_to_pixels_and_bad_ones_dropped_and_counted(tmp_path):
    path = _yolo_set(tmp_path, "1 0.5 0.5 0.5 0.5\n0 0.5 0.5 0 0.2\n")
    data = read_yolo(path, "train")
    (rec,) = data.records
    assert rec.boxes.tolist() == [[10.0, 7.5, 30.0, 22.5]] and rec.classes == ["dog"]
    assert data.skipped == {"box with zero/negative size or NaN (dropped)": 1}


def test_coco_malformed_json_names_line_and_column(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"x\.json:2:\d+: not valid JSON"):
        read_coco(bad)


def test_coco_annotation_of_unknown_image_is_an_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(
        '{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "p"}],'
        ' "annotations": [{"id": 7, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]}'
    )
    with pytest.raises(DataError, match="annotation id 7 names unknown image_id 2"):
        read_coco(bad)


@needs_shared
def test_voc_pennfudan_counts_match_the_dataset_readme():
    split = read_voc(SHARED / "pennfudan-voc")
    assert len(split.records) == 170
    assert split.class_names == ["person"]
    assert split.box_counts() == {"person": 423}
    first = next(r for r in split.records if r.path.name == "FudanPed00001.jpg")
    assert first.boxes.tolist() == [[159, 181, 302, 431], [419, 170, 535, 486]]  # 1-based VOC -> 0-based
    assert (first.width, first.height) == (559, 536)


def test_voc_malformed_xml_names_line_and_column(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation>\n<filename>a.jpg</filename>\n<size>\n</annotation>")
    with pytest.raises(DataError, match=r"a\.xml:4:\d+: not valid XML"):
        read_voc(tmp_path)


def test_voc_difficult_objects_become_ignore_regions(tmp_path):
    from PIL import Image

    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (50, 40)).save(tmp_path / "JPEGImages" / "a.jpg")
    obj = "<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax>"
    obj += "<ymax>30</ymax></bndbox></object>"
    xml = f"<annotation><filename>a.jpg</filename>{obj.format('cat', 0)}{obj.format('dog', 1)}</annotation>"
    (tmp_path / "Annotations" / "a.xml").write_text(xml)
    split = read_voc(tmp_path)
    assert split.records[0].classes == ["cat"]
    assert split.records[0].ignore_classes == ["dog"]
    assert split.records[0].ignore.tolist() == [[0, 0, 20, 30]]


def test_yolo_splits_as_folder_txt_list_list_of_both_and_bare_folder(tmp_path):
    from PIL import Image

    for folder, n in (("a", 2), ("b", 3)):
        (tmp_path / "images" / folder).mkdir(parents=True)
        (tmp_path / "labels" / folder).mkdir(parents=True)
        for k in range(n):
            Image.new("RGB", (20, 10)).save(tmp_path / "images" / folder / f"{k}.jpg")
            (tmp_path / "labels" / folder / f"{k}.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    # A .txt list with paths relative to the list's folder, as Ultralytics writes them.
    (tmp_path / "b.txt").write_text("images/b/0.jpg\nimages/b/2.jpg\n")
    (tmp_path / "data.yaml").write_text(
        "path: .\ntrain: images/a\nval: b.txt\ntest: [images/a, b.txt]\nnames: {0: cat, 1: dog}\n"
    )
    data_yaml = tmp_path / "data.yaml"
    assert len(read_yolo(data_yaml, "train").records) == 2
    assert [r.path.name for r in read_yolo(data_yaml, "val").records] == ["0.jpg", "2.jpg"]
    both = read_yolo(data_yaml, "test")
    assert len(both.records) == 4 and both.box_counts() == {"cat": 0, "dog": 4}
    bare = read_yolo(tmp_path / "images" / "b", "train")  # names from the data YAML beside it
    assert len(bare.records) == 3 and bare.class_names == ["cat", "dog"]
