"""Boxes stay on their objects through loading, letterboxing and flipping; each sample carries targets only
for the heads its source labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hydradet.config import load_config
from hydradet.data.dataset import SourceDataset
from hydradet.errors import ConfigError

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
# The flip alone; tests/test_augment.py covers the other transforms.
ONLY_FLIP = [
    "augment.scale=[1, 1]",
    "augment.brightness=0",
    "augment.contrast=0",
    "augment.saturation=0",
    "augment.hue=0",
]


def _painted_coco(tmp_path: Path, size: tuple[int, int]) -> Path:
    """One image of `size` (w, h), grey, with three boxes each painted a unique colour."""
    w, h = size
    arr = np.full((h, w, 3), 128, np.uint8)
    boxes = [[5, 8, 0.3 * w, 0.5 * h], [0.55 * w, 0.1 * h, 0.95 * w, 0.4 * h], [0.2 * w, 0.6 * h, 0.5 * w, 0.95 * h]]
    for (x0, y0, x1, y1), c in zip(boxes, COLOURS, strict=True):
        arr[round(y0) : round(y1), round(x0) : round(x1)] = c
    (tmp_path / "images").mkdir()
    Image.fromarray(arr).save(tmp_path / "images" / "a.png")
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": i + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
        for i, b in enumerate(boxes)
    ]
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(["red", "green", "blue"])]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}], "annotations": anns}
    path = tmp_path / "a.json"
    path.write_text(json.dumps({**data, "categories": cats}))
    return path


def painted_config(json_path: Path, *overrides: str, split: str = "train", extra_heads: dict | None = None):
    """A config with head `colours` (red, green, blue) over the painted source `painted`'s `split`."""
    heads = {"colours": {"task": "detect", "classes": ["red", "green", "blue"]}, **(extra_heads or {})}
    labels = {"colours": {"red": "red", "green": "green", "blue": "blue"}}
    return load_config(
        {"heads": heads, "sources": {"painted": {"format": "coco", split: str(json_path), "labels": labels}}},
        list(overrides),
    )


def _config(json_path: Path, hflip: float):
    return painted_config(json_path, "model.imgsz=96", f"augment.hflip={hflip}", *ONLY_FLIP)


@pytest.mark.parametrize("size", [(160, 100), (100, 160)], ids=["landscape", "portrait"])
@pytest.mark.parametrize("hflip", [0.0, 1.0], ids=["no-flip", "flip"])
def test_each_box_still_covers_its_painted_region(tmp_path, size, hflip):
    cfg = _config(_painted_coco(tmp_path, size), hflip)
    sample = SourceDataset(cfg, "painted", "train", train=True)[0]
    image = sample.image.permute(1, 2, 0).int()
    target = sample.targets["colours"]
    for box, label in zip(target["boxes"], target["labels"], strict=True):
        x0, y0, x1, y1 = box.round().int().tolist()
        inner = image[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]  # stay off the resampled edges
        colour = torch.tensor(COLOURS[int(label)])
        match = ((inner - colour).abs().max(-1).values < 40).float().mean()
        assert match > 0.95, f"box {box.tolist()} of class {int(label)} covers its colour only {match:.0%}"


def test_targets_exist_only_for_the_heads_the_source_labels(tmp_path):
    json_path = _painted_coco(tmp_path, (64, 64))
    cfg = load_config(
        {
            "heads": {
                "warm": {"task": "detect", "classes": ["red"]},
                "cool": {"task": "detect", "classes": ["blue", "green"]},
                "never": {"task": "detect", "classes": ["x"]},
            },
            "sources": {
                "painted": {
                    "format": "coco",
                    "train": str(json_path),
                    "labels": {"warm": {"red": "red"}, "cool": {"blue": "blue"}},
                }
            },
        },
        ["model.imgsz=64"],
    )
    ds = SourceDataset(cfg, "painted", "train", train=False)
    sample = ds[0]
    assert set(sample.targets) == {"warm", "cool"}
    assert sample.targets["warm"]["labels"].tolist() == [0]
    assert sample.targets["cool"]["labels"].tolist() == [0]  # "blue" is class 0 of head cool
    assert ds.unmapped == {"green": 1}  # mapped to no head: ignored and counted


def test_a_misspelled_source_class_under_labels_is_refused_with_a_suggestion(tmp_path):
    json_path = _painted_coco(tmp_path, (64, 64))
    cfg = load_config(
        {
            "heads": {"colours": {"task": "detect", "classes": ["red"]}},
            "sources": {"painted": {"format": "coco", "train": str(json_path), "labels": {"colours": {"Red": "red"}}}},
        },
    )
    with pytest.raises(ConfigError, match=r"sources\.painted\.labels\.colours\.Red: unknown source class 'Red'; did "):
        SourceDataset(cfg, "painted", "train", train=True)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "augmented"])
def test_crowd_regions_reach_their_head_as_ignore_regions_and_move_with_the_image(tmp_path, train):
    import json

    json_path = _painted_coco(tmp_path, (100, 160))
    data = json.loads(json_path.read_text())
    data["annotations"][2]["iscrowd"] = 1  # the blue box becomes a crowd region
    json_path.write_text(json.dumps(data))
    cfg = _config(json_path, hflip=1.0)
    sample = SourceDataset(cfg, "painted", "train", train=train)[0]
    target = sample.targets["colours"]
    assert target["labels"].tolist() == [0, 1]  # red and green stay boxes
    assert target["ignore_labels"].tolist() == [2]
    x0, y0, x1, y1 = target["ignore"][0].round().int().tolist()
    inner = sample.image.permute(1, 2, 0).int()[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
    assert ((inner - torch.tensor(COLOURS[2])).abs().max(-1).values < 40).float().mean() > 0.95
