"""`hydradet data check` reports, per source and split, images, boxes per class and head, images without boxes
and every problem with the first places named; it writes report.txt/json and a picture per head, and an
unreadable split is reported (exit 2) without hiding the others."""

from __future__ import annotations

import json
import re
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
from hydradet.config.load import load_config
from hydradet.data import records as R
from hydradet.data.check import DECODE_FAILED
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import save_weights


def _config(root: Path, extra: dict | None = None) -> Path:
    coco, yolo = write_coco_corpus(root / "coco"), write_yolo_corpus(root / "yolo")
    cfg = {
        "heads": {
            "pets": {"task": "detect", "classes": ["cat", "dog"]},
            **({"people": {"task": "detect", "classes": ["p"]}} if extra else {}),
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
    out = tmp_path / "runs" / "data_check"  # the default: PROJECT/data_check, a name sequence of its own
    printed = capsys.readouterr().out
    text = (out / "report.txt").read_text()
    assert printed.split("\nreport and pictures in")[0] in text
    coco, yolo, yolo_val = text.split("\ncoco/train: ")[1], text.split("\nyolo/train: ")[1], text.split("yolo/val: ")[1]
    assert "images: 8 (0 without boxes)\n  boxes per class: cat 9\n  head pets: 9 boxes; 0 images without pets" in coco
    assert "images: 8 (2 without boxes)\n  boxes per class: cat 2, dog 5\n  head pets: 5 boxes; 3 images" in yolo
    assert "ignored classes (mapped to no head): 1 class, 2 boxes (cat 2)" in yolo
    assert yolo_val.startswith(str(tmp_path / "yolo"))
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


def _world(tmp_path: Path) -> Path:
    assert main(["synth", str(tmp_path / "w"), "--train-images", "10", "--val-images", "4"]) == 0
    return tmp_path / "w" / "hydradet.yaml"


def test_data_check_then_train_lands_in_runs_train(tmp_path, capsys):
    """The check has a name sequence of its own: the first training is still PROJECT/train (README's path)."""
    config, project = _world(tmp_path), tmp_path / "runs"
    assert main(["data", "check", str(config), f"project={project}"]) == 0
    assert (project / "data_check" / "report.txt").is_file()
    assert main(["data", "check", str(config), f"project={project}"]) == 0
    assert (project / "data_check2" / "report.txt").is_file()
    fast = ["model.backbone_weights=null", "model.imgsz=64", "train.epochs=1", "train.steps_per_epoch=1"]
    assert main(["train", str(config), *fast, "train.workers=0", "train.plots=false", f"project={project}"]) == 0
    assert (project / "train" / "weights" / "best.safetensors").is_file()
    assert not (project / "train2").exists()


def test_a_head_no_source_labels_stops_data_check_and_train_unless_model_init_has_it(tmp_path, capsys):
    config = _world(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["heads"]["vehicle"] = {"task": "detect", "classes": ["car"]}
    lonely = config.with_name("lonely.yaml")
    lonely.write_text(yaml.safe_dump(cfg))
    fast = ["model.backbone_weights=null", "model.imgsz=64", "train.epochs=1", "train.steps_per_epoch=1"]
    fast += ["train.workers=0", "train.plots=false", f"project={tmp_path / 'runs'}"]
    capsys.readouterr()
    assert main(["data", "check", str(lonely), f"project={tmp_path / 'runs'}"]) == 2
    out = capsys.readouterr().out
    assert "ERROR: head vehicle: no source with a train split labels it" in out
    assert "sources.NAME.labels.vehicle" in out and "model.init=PATH" in out
    assert "\nerrors in head vehicle: training would stop; fix them first\nreport and pictures in" in out
    assert main(["train", str(lonely), *fast, "name=stopped"]) == 2
    assert "head vehicle: no source with a train split labels it" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "stopped").exists()  # stopped before the run had a folder

    # Weights that have the head: it is kept (a note says it will not change), and the run goes on.
    cfg = load_config(lonely, fast)
    save_weights(HydraDetector(cfg.model, cfg.heads), tmp_path / "base.safetensors")
    init = f"model.init={tmp_path / 'base.safetensors'}"
    assert main(["data", "check", str(lonely), init, f"project={tmp_path / 'runs'}"]) == 0
    # Weights whose head of that name is another head (here: other classes) do not count.
    other = load_config(lonely, [*fast, "heads.vehicle.classes=[bus]"])
    save_weights(HydraDetector(other.model, other.heads), tmp_path / "other.safetensors")
    assert main(["data", "check", str(lonely), f"model.init={tmp_path / 'other.safetensors'}"]) == 2
    assert main(["train", str(lonely), *fast, init, "name=from_init"]) == 0
    assert "note: head 'vehicle' has no train source; it will not change" in capsys.readouterr().out


def test_ignored_classes_are_one_line_with_the_largest_five(tmp_path, capsys):
    config = _world(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["sources"]["animals"]["labels"] = {"animal": {"dog": "dog"}}  # bird and giraffe now ignored
    config.write_text(yaml.safe_dump(cfg))
    assert main(["data", "check", str(config), f"project={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if "ignored classes" in s)
    ignored = r"  ignored classes \(mapped to no head\): 2 classes, \d+ boxes \((bird|giraffe) \d+, \w+ \d+\)"
    assert re.fullmatch(ignored, line)
    assert out.count("ignored classes") == 1  # animals has one split


def test_a_split_with_many_label_files_missing_is_a_warning_naming_the_share(tmp_path, capsys):
    config = _world(tmp_path)
    labels = sorted((config.parent / "animals" / "labels").rglob("*.txt"))
    for f in labels[: len(labels) // 2]:
        f.unlink()
    assert main(["data", "check", str(config), f"project={tmp_path / 'runs'}"]) == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert f"WARNING: sources.animals.train: {len(labels) // 2} of {len(labels)} images (50%) have no label file" in out
    assert "every object in them teaches heads animal that it is not there" in out
    labels[-1].unlink()  # under the share for the persons... and 1 more here: still one warning, new count
    fast = ["model.backbone_weights=null", "model.imgsz=64", "train.epochs=1", "train.steps_per_epoch=1"]
    assert main(["train", str(config), *fast, "train.workers=0", "train.plots=false", f"project={tmp_path}"]) == 0
    assert f"warning: sources.animals.train: {len(labels) // 2 + 1} of {len(labels)} images" in capsys.readouterr().out
