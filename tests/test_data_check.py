"""`hydradet data check` reports, per source and split, images, boxes per class and head, images without boxes
and every problem with the first places named; it writes report.txt/json and a picture per head, and an
unreadable split is reported (exit 2) without hiding the others."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from PIL import Image
from test_bad_files import (
    COCO_SKIPPED,
    COCO_WARNINGS,
    YOLO_SKIPPED,
    png_bad_pixels,
    write_coco_corpus,
    write_yolo_corpus,
)

from hydradet.cli import main
from hydradet.data import records as R
from hydradet.data.check import DECODE_FAILED


def _config(root: Path, extra: dict | None = None) -> Path:
    coco, yolo = write_coco_corpus(root / "coco"), write_yolo_corpus(root / "yolo")
    cfg = {
        "heads": {
            "pets": {"task": "detect", "classes": ["cat", "dog"]},
            "people": {"task": "detect", "classes": ["p"]},
        },
        "sources": {
            "coco": {"format": "coco", "train": str(coco), "labels": {"pets": {"cat": "cat"}}},
            "yolo": {"format": "yolo", "train": str(yolo), "val": str(yolo), "labels": {"pets": {"dog": "dog"}}},
            **(extra or {}),
        },
        "project": str(root / "runs"),
        "name": "exp",
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_report_counts_images_boxes_per_class_and_head_and_names_each_problem(tmp_path, capsys):
    assert main(["data", "check", str(_config(tmp_path))]) == 0
    out = tmp_path / "runs" / "exp" / "data_check"  # the default: PROJECT/NAME/data_check
    printed = capsys.readouterr().out
    text = (out / "report.txt").read_text()
    assert printed.split("\nreport and pictures in")[0] in text
    coco, yolo, yolo_val = text.split("\ncoco/train: ")[1], text.split("\nyolo/train: ")[1], text.split("yolo/val: ")[1]
    assert "images: 8 (0 without boxes)\n  boxes per class: cat 9\n  head pets: 9 boxes; 0 images without pets" in coco
    assert "images: 8 (2 without boxes)\n  boxes per class: cat 2, dog 5\n  head pets: 5 boxes; 3 images" in yolo
    assert "ignored classes (mapped to no head): cat 2" in yolo and yolo_val.startswith(str(tmp_path / "yolo"))
    assert f"  skipped: 1 x {R.IMAGE_MISSING}\n      missing.jpg (looked in " in coco
    assert f"  skipped: 4 x {R.BOX_DROPPED}\n      {tmp_path / 'yolo/labels/train/bad_boxes.txt'}:3\n" in yolo
    assert text.endswith("no errors\n")

    report = json.loads((out / "report.json").read_text())
    assert report["ok"] is True
    splits = {f"{s['source']}/{s['split']}": s for s in report["splits"]}
    assert set(splits) == {"coco/train", "yolo/train", "yolo/val"}
    assert splits["coco/train"]["skipped"] == COCO_SKIPPED and splits["coco/train"]["warnings"] == COCO_WARNINGS
    assert splits["yolo/train"]["skipped"] == YOLO_SKIPPED
    assert splits["yolo/train"]["boxes_per_head"] == {"pets": 5}
    assert splits["yolo/train"]["without_head_boxes"] == {"pets": 3}
    with Image.open(out / "boxes_pets.png") as im:
        assert im.size[0] > 3 * 200
    assert not (out / "boxes_people.png").exists()  # a head without boxes gets no picture


def test_an_unreadable_split_is_reported_and_the_others_still_checked(tmp_path, capsys):
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "labels").mkdir()
    Image.new("RGB", (20, 20)).save(bad / "images" / "a.jpg")
    (bad / "labels" / "a.txt").write_text("0 .5 .5 .1 .1\n3 .5 .5 .1 .1\n")
    (bad / "d.yaml").write_text("path: .\ntrain: images\nnames: [p]\n")
    extra = {"broken": {"format": "yolo", "train": str(bad / "d.yaml"), "labels": {"people": {"p": "p"}}}}
    out = tmp_path / "report"
    assert main(["data", "check", str(_config(tmp_path, extra)), "--out", str(out)]) == 2
    text = (out / "report.txt").read_text()
    assert (
        f"broken/train: {bad / 'd.yaml'}\n  ERROR: {bad / 'labels' / 'a.txt'}:2: class id 3 out of range 0..0" in text
    )
    assert "coco/train: " in text and "yolo/val: " in text
    assert text.endswith("errors in broken/train: training would stop; fix them first\n")
    assert json.loads((out / "report.json").read_text())["ok"] is False
    assert "ERROR" in capsys.readouterr().out


def test_decode_finds_images_whose_headers_are_fine_but_pixels_are_not(tmp_path, capsys):
    cfg = _config(tmp_path)
    png_bad_pixels(tmp_path / "yolo" / "images" / "train" / "la.png")
    assert main(["data", "check", str(cfg), "--out", str(tmp_path / "a")]) == 0
    assert DECODE_FAILED not in (tmp_path / "a" / "report.txt").read_text()
    assert main(["data", "check", str(cfg), "--out", str(tmp_path / "b"), "--decode"]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    yolo = next(s for s in report["splits"] if s["source"] == "yolo" and s["split"] == "train")
    assert yolo["skipped"][DECODE_FAILED] == 1
    assert yolo["examples"][DECODE_FAILED][0].startswith(f"{tmp_path / 'yolo/images/train/la.png'} (OSError: ")
