"""The label cache (hydradet/data/cache.py): a split read once is loaded again while its inputs are unchanged (no
image probed, no label parsed), read again when one changes (a label edited, an image added, the annotations
rewritten) with only the changed images probed, kept outside the data folder, and never in the way: a cache that
cannot be written is said and the run goes on. Records are held as arrays, a few hundred bytes per image."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hydradet.config import load_config
from hydradet.data import records as R
from hydradet.data.cache import CACHE_ENV, cache_dir
from hydradet.data.dataset import read_split
from hydradet.data.table import ImageRecord, RecordTable

HOUR_AGO = time.time() - 3600


def _age(root: Path) -> None:
    """Files written an hour ago, as a dataset's are: the cache trusts only times older than a few seconds."""
    for p in [root, *root.rglob("*")]:
        os.utime(p, (HOUR_AGO, HOUR_AGO))


def _yolo(root: Path, n: int = 3) -> Path:
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + i, 30)).save(root / "images" / f"{i}.jpg")
        (root / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("path: .\ntrain: images\nnames: [cat]\n")
    _age(root)
    return root / "data.yaml"


def _config(data: Path, fmt: str = "yolo"):
    sources = {"s": {"format": fmt, "train": str(data), "labels": {"pets": {"cat": "cat"}}}}
    return load_config({"heads": {"pets": {"task": "detect", "classes": ["cat"]}}, "sources": sources})


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def probes(monkeypatch) -> list[Path]:
    """Every image header probed from now on."""
    seen: list[Path] = []
    real = R.probe_image

    def counting(path: Path) -> tuple[int, int]:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(R, "probe_image", counting)
    return seen


def _boxes(data: R.SplitRecords) -> dict[str, list[list[float]]]:
    return {r.path.name: r.boxes.tolist() for r in data.records}


def test_a_split_read_again_unchanged_comes_from_the_cache_without_probing(tmp_path, probes, monkeypatch):
    cfg = _config(_yolo(tmp_path / "d"))
    first = read_split(cfg, "s", "train")
    assert len(probes) == 3 and [p.parent for p in (tmp_path / "cache").rglob("data.yaml-*.npz")] == [
        cache_dir() / "labels"
    ]

    def no_parsing(*args, **kwargs):
        raise AssertionError("a label file was parsed")

    monkeypatch.setattr("hydradet.data.yolo._parse_label_file", no_parsing)
    again = read_split(cfg, "s", "train")
    assert len(probes) == 3  # nothing probed or parsed the second time
    assert _boxes(again) == _boxes(first) and [r.width for r in again.records] == [40, 41, 42]
    assert (again.skipped, again.warnings, again.looked_in) == (first.skipped, first.warnings, first.looked_in)


def test_a_label_file_edited_after_the_cache_was_written_is_read_again(tmp_path, probes):
    data = _yolo(tmp_path / "d")
    cfg = _config(data)
    read_split(cfg, "s", "train")
    (tmp_path / "d" / "labels" / "1.txt").write_text("0 0.5 0.5 0.25 0.25\n0 0.5 0.5 0.25 0.25\n")
    edited = read_split(cfg, "s", "train")
    assert _boxes(edited)["1.jpg"] == [[15.375, 11.25, 25.625, 18.75]]  # the new box (its duplicate removed)
    assert edited.skipped == {R.DUPLICATE_ROW: 1}
    assert len(probes) == 3  # the images did not change: none was probed again


def test_an_edit_of_the_same_size_within_the_file_systems_time_resolution_is_seen(tmp_path):
    # Written, cached and rewritten within milliseconds: the time may not change, the size does not.
    data = _yolo(tmp_path / "d")
    label = tmp_path / "d" / "labels" / "0.txt"
    label.write_text("0 0.5 0.5 0.5 0.5\n")
    cfg = _config(data)
    read_split(cfg, "s", "train")
    label.write_text("0 0.5 0.5 0.2 0.5\n")
    assert _boxes(read_split(cfg, "s", "train"))["0.jpg"] == [[16.0, 7.5, 24.0, 22.5]]


def test_an_image_added_to_the_folder_or_replaced_is_seen_and_only_it_is_probed(tmp_path, probes):
    data = _yolo(tmp_path / "d")
    cfg = _config(data)
    read_split(cfg, "s", "train")
    Image.new("RGB", (80, 60)).save(tmp_path / "d" / "images" / "9.jpg")
    Image.new("RGB", (50, 30)).save(tmp_path / "d" / "images" / "2.jpg")
    again = read_split(cfg, "s", "train")
    assert [(r.path.name, r.width) for r in again.records] == [
        ("0.jpg", 40),
        ("1.jpg", 41),
        ("2.jpg", 50),
        ("9.jpg", 80),
    ]
    assert sorted(p.name for p in probes[3:]) == ["2.jpg", "9.jpg"]
    assert again.skipped == {R.LABEL_MISSING: 1}


def test_rewritten_coco_annotations_are_read_again(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    path = tmp_path / "ann.json"

    def write(bbox: list[float]) -> None:
        ann = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox}]
        coco = {
            "images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": ann,
            "categories": [{"id": 1, "name": "cat"}],
        }
        path.write_text(json.dumps(coco))
        _age(tmp_path)

    write([1, 1, 10, 10])
    cfg = _config(path, "coco")
    assert _boxes(read_split(cfg, "s", "train")) == {"a.jpg": [[1, 1, 11, 11]]}
    write([2, 2, 20, 20.5])
    assert _boxes(read_split(cfg, "s", "train")) == {"a.jpg": [[2, 2, 22, 22.5]]}


def test_the_cache_is_kept_outside_the_data_folder_and_a_folder_it_cannot_use_is_said_not_fatal(tmp_path, monkeypatch):
    data = _yolo(tmp_path / "d")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "d").rglob("*"))
    cfg = _config(data)
    read_split(cfg, "s", "train")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "d").rglob("*")) == before  # nothing written there
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "not_a_folder"))
    with pytest.warns(UserWarning, match=f"label cache not written.*{CACHE_ENV}"):
        assert len(read_split(cfg, "s", "train").records) == 3


def test_records_are_held_as_arrays_of_a_few_hundred_bytes_per_coco_like_image():
    rng = np.random.default_rng(0)
    recs = [
        ImageRecord(
            Path(f"/data/coco/train2017/{i:012d}.jpg"), rng.random((8, 4), np.float32) * 100, ["person"] * 8, 640, 480
        )
        for i in range(20000)
    ]
    table = RecordTable(recs)
    per_image = sum(a.nbytes for a in table.to_arrays().values()) / len(table)
    assert per_image < 250
    r = table[12345]
    assert r.path == recs[12345].path and r.classes == recs[12345].classes and (r.width, r.height) == (640, 480)
    np.testing.assert_array_equal(r.boxes, recs[12345].boxes)
    assert table.box_counts() == {"person": 160000} and table.images_without(["dog"]) == 20000
