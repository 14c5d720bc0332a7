"""`hydradet split` makes a partial-label benchmark from a fully labelled COCO set: disjoint train parts, each
with only its own head's labels, and an untouched fully labelled val; on the real COCO subset it feeds a short
training run end to end."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import CLI_FAST
from PIL import Image

from hydradet.cli import main
from hydradet.config import load_config
from hydradet.data.dataset import SourceDataset
from hydradet.data.split import split_coco

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FAST = CLI_FAST
HEADS = {"person": ["person"], "animal": ["cat", "dog"]}
ANIMALS = "animal=bird,cat,dog,horse,sheep,cow,elephant,bear,zebra,giraffe"


def _coco_world(root: Path, n: int = 20) -> Path:
    """n images, each with a person, a cat or dog, and a car; extra keys that a split must keep."""
    (root / "images").mkdir(parents=True)
    cats = [{"id": i, "name": c, "supercategory": "x"} for i, c in ((1, "person"), (2, "cat"), (3, "dog"), (7, "car"))]
    images, anns = [], []
    for i in range(1, n + 1):
        Image.new("RGB", (32, 24), (i * 10, 50, 50)).save(root / "images" / f"{i:03d}.png")
        images.append({"id": i, "file_name": f"{i:03d}.png", "width": 32, "height": 24, "license": 3})
        for cat in (1, 2 + i % 2, 7):
            anns.append({"id": 100 + len(anns), "image_id": i, "category_id": cat, "bbox": [2, 2, 10, 8], "area": 80})
            anns[-1]["iscrowd"] = int(i == 5 and cat == 1)
            anns[-1]["segmentation"] = [[2, 2, 12, 2, 12, 10]]
    path = root / "instances.json"
    path.write_text(json.dumps({"info": {"v": 1}, "images": images, "annotations": anns, "categories": cats}))
    return path


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_parts_are_disjoint_keep_only_their_heads_labels_and_val_is_untouched(tmp_path):
    original = _read(src := _coco_world(tmp_path / "coco"))
    result = split_coco(src, HEADS, tmp_path / "out", seed=1, val_fraction=0.2)
    parts = {h: _read(p) for h, p in result.parts.items()}
    val = _read(result.val_json)

    ids = {h: {img["id"] for img in d["images"]} for h, d in parts.items()}
    val_ids = {img["id"] for img in val["images"]}
    assert len(val_ids) == 4 and len(ids["person"]) == len(ids["animal"]) == 8
    assert not ids["person"] & ids["animal"] and not (ids["person"] | ids["animal"]) & val_ids
    assert ids["person"] | ids["animal"] | val_ids == {img["id"] for img in original["images"]}

    for head, classes in HEADS.items():
        keep = {c["id"] for c in original["categories"] if c["name"] in classes}
        assert [c["name"] for c in parts[head]["categories"]] == classes
        expected = [a for a in original["annotations"] if a["image_id"] in ids[head] and a["category_id"] in keep]
        assert parts[head]["annotations"] == expected  # all of its own classes, entries unchanged, nothing else
        assert parts[head]["info"] == original["info"]

    # val: the same entries, all classes, every annotation of its images (iscrowd and segmentation included)
    assert val["categories"] == original["categories"]
    assert val["images"] == [img for img in original["images"] if img["id"] in val_ids]
    assert val["annotations"] == [a for a in original["annotations"] if a["image_id"] in val_ids]

    again = split_coco(src, HEADS, tmp_path / "again", seed=1, val_fraction=0.2)
    other = split_coco(src, HEADS, tmp_path / "other", seed=2, val_fraction=0.2)
    assert again.parts["person"].read_text() == result.parts["person"].read_text()
    assert other.parts["person"].read_text() != result.parts["person"].read_text()


def test_the_written_config_reads_each_part_for_its_own_head_only(tmp_path):
    result = split_coco(_coco_world(tmp_path / "coco"), HEADS, tmp_path / "out", seed=0)
    cfg = load_config(result.config_yaml)
    assert cfg.source_heads() == {"only_person": ("person",), "only_animal": ("animal",), "full_val": tuple(HEADS)}
    person = SourceDataset(cfg, "only_person", "train", train=False)
    assert len(person) == 8 and person.data.class_names == ["person"]
    val = SourceDataset(cfg, "full_val", "val", train=False)
    assert set(val.class_maps) == {"person", "animal"} and val.unmapped == {"car": 4}


def test_an_existing_val_file_is_used_as_given(tmp_path):
    src, val_src = _coco_world(tmp_path / "coco"), _coco_world(tmp_path / "val", n=3)
    result = split_coco(src, HEADS, tmp_path / "out", seed=0, val_json=val_src)
    assert result.val_json == val_src
    assert sum(len(_read(p)["images"]) for p in result.parts.values()) == 20
    cfg = load_config(result.config_yaml)
    assert len(SourceDataset(cfg, "full_val", "val", train=False)) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--head", "person=person", "--head", "animal=cat,dgo"], r"no category 'dgo'; did you mean 'dog'\?"),
        (["--head", "person=person", "--head", "animal"], r"--head 'animal': expected NAME=CLASS\[,CLASS\.\.\.\]"),
        (["--head", "person=person"], r"give at least two heads"),
        (["--head", "a=cat", "--head", "a=dog"], r"each head name may be given once"),
        (["--head", "a=cat", "--head", "b=dog", "--val-fraction", "1.5"], r"--val-fraction 1\.5: must be in"),
    ],
)
def test_bad_arguments_exit_2_with_the_fix(tmp_path, capsys, args, message):
    src = _coco_world(tmp_path / "coco")
    assert main(["split", str(src), "--out", str(tmp_path / "out"), *args]) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data not found at {SHARED}")
def test_split_of_the_real_coco_subset_then_a_short_train_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["split", str(SHARED / "coco-train" / "instances.json"), "--head", "person=person", "--head", ANIMALS]
    assert main([*args, "--out", str(out), "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    assert "person: 135 images" in printed and "animal: 135 images" in printed and "val: 67 images" in printed
    train = ["train", str(out / "hydradet.yaml"), "train.epochs=1", "train.steps_per_epoch=2", f"project={tmp_path}"]
    assert main([*train, "name=s", *FAST]) == 0
    (row,) = list(csv.DictReader((tmp_path / "s" / "results.csv").open()))
    for col in ("loss/person", "loss/animal", "person/mAP50", "animal/mAP50"):
        assert row[col] != "", col
    assert row["skipped_images"] == "0"
