"""Totals before training (hydradet/data/totals.py): a train split without a usable image, or a head without a
box from any train source, stops `hydradet train` with exit 2 before a run folder exists, and `data check`
reports the same; the message names source, split and head, what was lost by reason, where the reader looked
and the fix. A val split without images is a warning, and evaluation skips it. Each case is one users hit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import CLI_FAST
from PIL import Image

from hydradet.cli import main
from hydradet.config import load_config
from hydradet.data import records as R
from hydradet.data.dataset import split_datasets
from hydradet.data.totals import check_totals
from hydradet.errors import DataError

PERSON = {"person": {"task": "detect", "classes": ["person"]}}
BOX = "0 0.5 0.5 0.5 0.5\n"


def _image(path: Path, size: tuple[int, int] = (48, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(path)


def _yolo(root: Path, images: list[str], labels: dict[str, str], train: str = "images/train") -> Path:
    """A YOLO set: `images` under root/images/train, `labels` {relative path: text} under root, a data YAML."""
    for name in images:
        _image(root / "images" / "train" / name)
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    for rel, text in labels.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    path = root / "data.yaml"
    path.write_text(f"path: .\ntrain: {train}\nval: {train}\nnames: [person, dog]\n")
    return path


def _config(tmp_path: Path, sources: dict, heads: dict | None = None) -> Path:
    path = tmp_path / "cfg.yaml"
    cfg = {"heads": heads or PERSON, "sources": sources, "project": str(tmp_path / "runs"), "name": "exp"}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _people(data: Path, **extra) -> dict:
    return {"people": {"format": "yolo", "train": str(data), "labels": {"person": {"person": "person"}}, **extra}}


def _train_fails(cfg: Path, capsys) -> str:
    """`hydradet train` exits 2 with an error (no traceback) before any run folder is made; the message."""
    assert main(["train", str(cfg), "train.epochs=1", *CLI_FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training cannot start") and "Traceback" not in err
    assert not (cfg.parent / "runs").exists()
    return err


def _check_fails(cfg: Path, capsys) -> tuple[str, dict]:
    """`hydradet data check` exits 2 and says so; its report.txt (as printed) and report.json."""
    out = cfg.parent / "check"
    assert main(["data", "check", str(cfg), "--out", str(out)]) == 2
    text = (out / "report.txt").read_text()
    assert text.split("\n", 1)[1] in capsys.readouterr().out  # printed as written, after the title line
    assert text.endswith("training would stop; fix them first\n")
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] is False
    return text, report


def test_an_empty_image_folder_stops_training_naming_source_split_where_and_the_orphaned_labels(tmp_path, capsys):
    data = _yolo(tmp_path / "d", [], {"labels/train/a.txt": BOX, "labels/train/b.txt": BOX})
    cfg = _config(tmp_path, _people(data))
    err = _train_fails(cfg, capsys)
    assert f"sources.people.train ({data}): no usable image; nothing to train heads person on" in err
    assert f"looked in: images: {tmp_path / 'd/images/train'} (0 image files found)" in err
    assert f"looked in: labels: {tmp_path / 'd/labels/train'}/**/*.txt" in err
    # The two label files are what is left of the images: counted and named, with the fix for them.
    assert f"lost: 2 x {R.LABEL_ORPHAN}, e.g. {tmp_path / 'd/labels/train/a.txt'}" in err
    assert "fix: make image and label file names agree" in err

    printed, report = _check_fails(cfg, capsys)
    assert "people/train: " in printed and "  ERROR: sources.people.train" in printed
    assert "errors in people/train" in printed
    (problem,) = [p for p in report["problems"] if p["error"]]
    assert (problem["source"], problem["split"], problem["head"]) == ("people", "train", None)
    train = next(s for s in report["splits"] if s["split"] == "train")
    assert train["skipped"] == {R.LABEL_ORPHAN: 2}


def _voc(root: Path, xml_names: dict[str, str], images_folder: str = "JPEGImages") -> Path:
    (root / "Annotations").mkdir(parents=True)
    for stem, filename in xml_names.items():
        obj = "<object><name>person</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax>"
        xml = f"<annotation><filename>{filename}</filename><size><width>48</width><height>32</height></size>"
        (root / "Annotations" / f"{stem}.xml").write_text(xml + obj + "</bndbox></object></annotation>")
        _image(root / images_folder / filename)
    return root


def test_voc_filenames_that_all_point_at_missing_files_stop_training_and_say_where_the_images_are(tmp_path, capsys):
    # Penn-Fudan's own layout: the pictures in PNGImages/, where a VOC reader does not look.
    root = _voc(tmp_path / "peds", {"a": "a.png", "b": "b.png"}, images_folder="PNGImages")
    cfg = _config(tmp_path, {"peds": {"format": "voc", "train": str(root), "labels": {"person": {"person": "p"}}}})
    cfg.write_text(cfg.read_text().replace("person: p", "person: person"))
    err = _train_fails(cfg, capsys)
    assert f"sources.peds.train ({root}): no usable image" in err
    missing = root / "JPEGImages" / "a.png"
    assert f"lost: 2 x {R.IMAGE_MISSING}, e.g. {missing} (named in {root / 'Annotations' / 'a.xml'})" in err
    assert f"looked in: annotations: {root / 'Annotations'}/*.xml (2 found)" in err
    assert f"hint: {missing} is named in the annotations, but {root / 'PNGImages' / 'a.png'} exists" in err
    assert "fix: see the hint" in err
    printed, _ = _check_fails(cfg, capsys)
    assert f"  ERROR: sources.peds.train ({root}): no usable image" in printed


def test_a_train_list_whose_labels_sit_in_Labels_stops_training_naming_head_where_it_looked_and_the_fix(
    tmp_path, capsys
):
    root = tmp_path / "d"
    data = _yolo(root, ["a.jpg", "b.jpg"], {"Labels/a.txt": BOX, "Labels/b.txt": BOX}, train="train.txt")
    (root / "train.txt").write_text("images/train/a.jpg\nimages/train/b.jpg\n")
    # Labels/a.txt is beside images/, not in the labels/ a YOLO reader derives: every image reads as background.
    (root / "Labels" / "train").mkdir()
    for n in "ab":
        (root / "Labels" / f"{n}.txt").rename(root / "Labels" / "train" / f"{n}.txt")
    cfg = _config(tmp_path, _people(data))
    err = _train_fails(cfg, capsys)
    assert "head person: no box from any train source (people/train):" in err
    assert f"sources.people.train ({data}): 2 images, 0 person boxes" in err
    expected = root / "labels" / "train" / "a.txt"
    assert f"lost: 2 x {R.LABEL_MISSING}, e.g. {expected}" in err
    assert f"looked in: labels: {root / 'labels' / 'train'}/*.txt" in err
    assert f"hint: {root / 'images/train/a.jpg'}'s label is at {root / 'Labels/train/a.txt'}" in err
    assert f"move or rename {root / 'Labels'} so that the labels are at {root / 'labels' / 'train'}" in err

    printed, report = _check_fails(cfg, capsys)
    assert "ERROR: head person: no box from any train source" in printed
    assert printed.rstrip().endswith("errors in head person: training would stop; fix them first")
    assert [p["head"] for p in report["problems"] if p["error"]] == ["person"]


def _coco(root: Path, classes: list[str], n_images: int = 2) -> Path:
    """n_images images, each with one box of every class in `classes`; categories person and dog."""
    images, anns = [], []
    for i in range(1, n_images + 1):
        _image(root / "images" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 48, "height": 32})
        for c in classes:
            anns.append(
                {"id": len(anns) + 1, "image_id": i, "category_id": {"person": 1, "dog": 2}[c], "bbox": [2, 2, 9, 9]}
            )
    cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_a_head_that_its_only_source_gives_no_box_stops_training_and_names_the_unmapped_classes(tmp_path, capsys):
    dogs = _coco(tmp_path / "dogs", ["dog"])
    cfg = _config(
        tmp_path, {"pets": {"format": "coco", "train": str(dogs), "labels": {"person": {"person": "person"}}}}
    )
    err = _train_fails(cfg, capsys)
    assert f"head person: no box from any train source (pets/train):\n    sources.pets.train ({dogs}): 2 images" in err
    assert "its boxes are of classes that sources.pets.labels.person does not map: dog 2" in err
    assert f"looked in: annotations: {dogs} (2 images, 2 annotations)" in err
    assert "fix: map the classes it has under sources.pets.labels.person (now: person)" in err


def test_a_source_that_gives_its_head_no_box_while_another_does_is_a_warning_in_train_and_data_check(tmp_path, capsys):
    people, dogs = _coco(tmp_path / "people", ["person"]), _coco(tmp_path / "dogs", ["dog"])
    sources = {
        "people": {"format": "coco", "train": str(people), "labels": {"person": {"person": "person"}}},
        "dogs": {"format": "coco", "train": str(dogs), "labels": {"person": {"person": "person"}}},
    }
    path = _config(tmp_path, sources)
    cfg = load_config(path)
    train, val = split_datasets(cfg, "train"), split_datasets(cfg, "val")
    kept, warnings = check_totals(cfg, train, val)
    assert kept == [] and len(warnings) == 1
    assert warnings[0].startswith(f"warning: sources.dogs.train ({dogs}): 2 images, 0 person boxes: its images")
    assert "teach head person only background (other sources give it boxes)" in warnings[0]
    assert "does not map: dog 2" in warnings[0]

    assert main(["data", "check", str(path), "--out", str(tmp_path / "check")]) == 0
    text = (tmp_path / "check" / "report.txt").read_text()
    assert text.split("\n", 1)[1] in capsys.readouterr().out
    assert "  WARNING: sources.dogs.train" in text.split("dogs/train: ")[1] and text.endswith("no errors\n")


def test_every_error_is_listed_at_once(tmp_path):
    empty = _yolo(tmp_path / "e", [], {})
    dogs = _coco(tmp_path / "dogs", ["dog"])
    sources = {
        **_people(empty),
        "pets": {"format": "coco", "train": str(dogs), "labels": {"animal": {"person": "cat"}}},
    }
    heads = {**PERSON, "animal": {"task": "detect", "classes": ["cat"]}}
    cfg = load_config(_config(tmp_path, sources, heads))
    with pytest.raises(DataError) as e:
        check_totals(cfg, split_datasets(cfg, "train"), split_datasets(cfg, "val"))
    msg = str(e.value)
    assert msg.startswith("training cannot start: 2 problems with the data")
    assert "sources.people.train" in msg and "the reader found no image at all" in msg
    assert "head animal: no box from any train source (pets/train)" in msg
    assert "fix: point sources.people.train at the images" in msg


def test_a_val_split_without_images_is_a_warning_and_training_runs_without_evaluating_it(tmp_path, one_thread):
    from hydradet.train.trainer import train

    root = tmp_path / "d"
    data = _yolo(root, ["a.jpg", "b.jpg"], {"labels/train/a.txt": BOX, "labels/train/b.txt": BOX})
    (root / "images" / "empty").mkdir()
    data.write_text(data.read_text().replace("val: images/train", "val: images/empty"))
    cfg = load_config(_config(tmp_path, _people(data, val=str(data))), [*CLI_FAST, "train.epochs=1"])
    lines: list[str] = []
    run = train(cfg, log=lines.append)
    text = "\n".join(lines)
    assert f"warning: sources.people.val ({data}): no usable image; evaluation of person on it is skipped" in text
    assert f"looked in: images: {root / 'images' / 'empty'} (0 image files found)" in text
    assert "people/val" not in text.split("data:")[1]  # left out of the summary and of evaluation
    (row,) = list(csv.DictReader((run / "results.csv").open()))
    assert row["person/mAP50"] == "" and row["eval_s"] == ""
    assert (run / "weights" / "best.safetensors").is_file()


def test_data_check_reports_an_empty_val_split_as_a_warning_not_an_error(tmp_path, capsys):
    root = tmp_path / "d"
    data = _yolo(root, ["a.jpg"], {"labels/train/a.txt": BOX})
    (root / "images" / "empty").mkdir()
    data.write_text(data.read_text().replace("val: images/train", "val: images/empty"))
    cfg = _config(tmp_path, _people(data, val=str(data)))
    assert main(["data", "check", str(cfg), "--out", str(tmp_path / "check")]) == 0
    text = (tmp_path / "check" / "report.txt").read_text()
    capsys.readouterr()
    val = text.split("people/val: ")[1]
    assert f"  WARNING: sources.people.val ({data}): no usable image; evaluation of person on it is skipped" in val
    assert f"    looked in: images: {root / 'images' / 'empty'} (0 image files found)" in val
    assert "ERROR" not in text and text.endswith("no errors\n")
    report = json.loads((tmp_path / "check" / "report.json").read_text())
    assert report["ok"] is True
    assert [(p["source"], p["split"], p["error"]) for p in report["problems"]] == [("people", "val", False)]
