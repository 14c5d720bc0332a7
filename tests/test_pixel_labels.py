"""YOLO labels written in pixels instead of 0-1 (yolov5#4798, ultralytics#13924) are named as what they are: a row
beyond 1 is dropped and counted as "YOLO labels must be normalised to 0-1; FILE:LINE has 266.0 (pixels?)"; a file
wholly in pixels leaves its image out (never trained as background), naming the file; a split wholly in pixels
stops `train` (exit 2, no traceback) and fails `data check` with that fix."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import CLI_FAST
from PIL import Image

from hydradet.cli import main
from hydradet.data import records as R
from hydradet.data.yolo import read_yolo

NORMALISED = "0 0.5 0.5 0.25 0.25\n"
PIXELS = "0 266.0 120 64 48\n"  # the same kind of box, in the pixels of a 640x480 image


def _yolo(root: Path, labels: dict[str, str]) -> Path:
    for name, text in labels.items():
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (640, 480), (90, 120, 150)).save(root / "images" / f"{name}.jpg")
        (root / "labels" / f"{name}.txt").write_text(text)
    (root / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [person]\n")
    return root / "data.yaml"


def test_a_row_beyond_1_is_dropped_and_named_with_its_value_not_as_a_zero_size_box(tmp_path):
    data = read_yolo(_yolo(tmp_path, {"a": NORMALISED + PIXELS + "0 0.5 0.5 0.2 1.004\n"}), "train")
    (rec,) = data.records
    assert len(rec.boxes) == 2  # the normalised row, and the one within the tolerance (clipped)
    assert R.BOX_DROPPED not in data.skipped
    assert data.skipped == {R.ROW_NOT_NORMALISED: 1}
    assert R.ROW_NOT_NORMALISED.startswith("YOLO labels must be normalised to 0-1")
    assert data.examples[R.ROW_NOT_NORMALISED] == [f"{tmp_path / 'labels' / 'a.txt'}:2 has 266.0 (pixels?)"]


def test_a_file_wholly_in_pixels_leaves_its_image_out_naming_the_file(tmp_path):
    data = read_yolo(_yolo(tmp_path, {"a": NORMALISED, "b": PIXELS * 2}), "train")
    assert [r.path.name for r in data.records] == ["a.jpg"]  # b is not trained as a background image
    assert data.skipped == {R.LABEL_IN_PIXELS: 1}
    (example,) = data.examples[R.LABEL_IN_PIXELS]
    assert example.startswith(f"{tmp_path / 'labels' / 'b.txt'} ") and "266.0" in example


def test_a_split_wholly_in_pixels_stops_training_and_data_check_with_the_fix(tmp_path, capsys):
    data = _yolo(tmp_path / "d", {"a": PIXELS, "b": PIXELS + PIXELS.replace("266.0", "300")})
    cfg = tmp_path / "cfg.yaml"
    sources = {"people": {"format": "yolo", "train": str(data), "labels": {"person": {"person": "person"}}}}
    heads = {"person": {"task": "detect", "classes": ["person"]}}
    cfg.write_text(yaml.safe_dump({"heads": heads, "sources": sources, "project": str(tmp_path / "runs")}))
    assert main(["train", str(cfg), "train.epochs=1", *CLI_FAST]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
    assert f"lost: 2 x {R.LABEL_IN_PIXELS}, e.g. {tmp_path / 'd' / 'labels' / 'a.txt'}" in err
    assert "fix: YOLO labels must be normalised to 0-1: divide" in err
    assert main(["data", "check", str(cfg), "--out", str(tmp_path / "check")]) == 2
    assert "fix: YOLO labels must be normalised to 0-1: divide" in capsys.readouterr().out
