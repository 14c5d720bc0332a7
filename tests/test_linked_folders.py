"""Symbolic links inside a split's folders are followed, files and folders alike (ultralytics#14672, #5036): the
images under a linked subfolder are read with their labels, not dropped as orphans; a link loop is refused naming
the link; `predict` on the folder sees the same images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from hydradet.data import records as R
from hydradet.data.yolo import read_yolo
from hydradet.errors import DataError
from hydradet.infer.sources import expand_path

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symbolic links need a POSIX file system here")


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (90, 90, 90)).save(path)


def _label(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("0 0.5 0.5 0.5 0.5\n")


def _linked_set(tmp_path: Path) -> Path:
    """images/train: a.jpg, `more` (a link to a folder elsewhere, with b.jpg and deeper/c.jpg) and d.jpg (a link
    to a file elsewhere); the labels of all four where the reader looks (labels/train/...)."""
    root = tmp_path / "set"
    _image(root / "images" / "train" / "a.jpg")
    _image(tmp_path / "pool" / "b.jpg")
    _image(tmp_path / "pool" / "deeper" / "c.jpg")
    _image(tmp_path / "elsewhere" / "d.jpg")
    (root / "images" / "train" / "more").symlink_to(tmp_path / "pool", target_is_directory=True)
    (root / "images" / "train" / "d.jpg").symlink_to(tmp_path / "elsewhere" / "d.jpg")
    for rel in ("a.txt", "more/b.txt", "more/deeper/c.txt", "d.txt"):
        _label(root / "labels" / "train" / rel)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [cat]\n")
    return root


def test_images_under_a_linked_subfolder_are_read_with_their_labels(tmp_path):
    root = _linked_set(tmp_path)
    data = read_yolo(root / "data.yaml", "train")
    names = sorted(r.path.relative_to(root / "images" / "train").as_posix() for r in data.records)
    assert names == ["a.jpg", "d.jpg", "more/b.jpg", "more/deeper/c.jpg"]
    assert all(len(r.boxes) == 1 for r in data.records)
    assert R.LABEL_ORPHAN not in data.skipped and R.LABEL_MISSING not in data.skipped


def test_labels_in_a_linked_label_folder_are_found(tmp_path):
    root = _linked_set(tmp_path)
    # The label folder of `more` is itself a link to labels kept beside the pool.
    linked = root / "labels" / "train" / "more"
    for p in sorted(linked.rglob("*.txt"), reverse=True):
        p.unlink()
    (linked / "deeper").rmdir()
    linked.rmdir()
    _label(tmp_path / "pool_labels" / "b.txt")
    _label(tmp_path / "pool_labels" / "deeper" / "c.txt")
    linked.symlink_to(tmp_path / "pool_labels", target_is_directory=True)
    data = read_yolo(root / "data.yaml", "train")
    assert len(data.records) == 4 and all(len(r.boxes) == 1 for r in data.records)
    assert not data.skipped


def test_a_linked_image_whose_label_lies_beside_its_target_is_labelled(tmp_path):
    # images/train/e.jpg -> other/images/e.jpg, labelled at other/labels/e.txt (not at labels/train/e.txt).
    root = _linked_set(tmp_path)
    _image(tmp_path / "other" / "images" / "e.jpg")
    _label(tmp_path / "other" / "labels" / "e.txt")
    (root / "images" / "train" / "e.jpg").symlink_to(tmp_path / "other" / "images" / "e.jpg")
    data = read_yolo(root / "data.yaml", "train")
    e = next(r for r in data.records if r.path.name == "e.jpg")
    assert len(e.boxes) == 1 and R.LABEL_MISSING not in data.skipped


def test_a_link_loop_is_refused_naming_the_link(tmp_path):
    root = _linked_set(tmp_path)
    loop = tmp_path / "pool" / "back"
    loop.symlink_to(root / "images", target_is_directory=True)  # .../more/back/train/more/back/...
    with pytest.raises(DataError, match=r"back.*loop"):
        read_yolo(root / "data.yaml", "train")
    with pytest.raises(DataError, match=r"back.*loop"):
        expand_path(root / "images" / "train")


def test_predict_on_a_folder_sees_the_images_under_its_links(tmp_path):
    root = _linked_set(tmp_path)
    found = [p.relative_to(root / "images" / "train").as_posix() for p in expand_path(root / "images" / "train")]
    assert found == ["a.jpg", "d.jpg", "more/b.jpg", "more/deeper/c.jpg"]
