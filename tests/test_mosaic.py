"""Mosaic: four images of one source tiled around a centre, boxes still on their objects; a mosaic never mixes
sources (it would supervise a head in some quadrants and not in others); the trainer turns it off at the end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hydradet.config import load_config
from hydradet.data.dataset import SourceDataset
from hydradet.data.mosaic import mosaic
from hydradet.train.trainer import train

PLAIN = ["augment.scale=[1, 1]", "augment.hflip=0", "augment.brightness=0", "augment.contrast=0"]
PLAIN += ["augment.saturation=0", "augment.hue=0"]


def _tile(colour: tuple[int, int, int], w: int, h: int) -> tuple[torch.Tensor, dict]:
    """A grey image with one painted box of `colour` in its middle."""
    img = torch.full((3, h, w), 128, dtype=torch.uint8)
    box = [w * 0.3, h * 0.3, w * 0.7, h * 0.7]
    img[:, round(box[1]) : round(box[3]), round(box[0]) : round(box[2])] = torch.tensor(colour)[:, None, None]
    return img, {"obj": {"boxes": torch.tensor([box]), "labels": torch.tensor([0])}}


def test_each_tile_lands_in_its_quadrant_with_its_box_on_it():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    tiles = [_tile(c, w, h) for c, (w, h) in zip(colours, [(80, 60), (60, 80), (100, 100), (90, 50)], strict=True)]
    size, center = 64, (64.0, 64.0)  # the window is the canvas' middle: each tile's inner half shows
    image, targets = mosaic([t[0] for t in tiles], [t[1] for t in tiles], size, center)
    assert image.shape == (3, size, size)
    boxes = targets["obj"]["boxes"]
    assert boxes.shape == (4, 4)
    for (x0, y0, x1, y1), colour in zip(boxes.tolist(), colours, strict=True):
        # The visible part of each box (clipped to the window) is painted its tile's colour.
        x0, y0, x1, y1 = (round(max(0, min(size, v))) for v in (x0, y0, x1, y1))
        inner = image[:, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].permute(1, 2, 0).int()
        assert inner.numel() > 0
        assert ((inner - torch.tensor(colour)).abs().max(-1).values < 30).float().mean() > 0.95
    quadrant = [(boxes[:, 0] + boxes[:, 2]) / 2 < size / 2, (boxes[:, 1] + boxes[:, 3]) / 2 < size / 2]
    assert quadrant[0].tolist() == [True, False, True, False] and quadrant[1].tolist() == [True, True, False, False]


def test_tiles_of_different_sources_are_refused():
    a, b = _tile((255, 0, 0), 40, 40), _tile((0, 0, 255), 40, 40)
    other = (b[0], {"cool": b[1]["obj"]})
    with pytest.raises(ValueError, match="one source"):
        mosaic([a[0], a[0], a[0], other[0]], [a[1], a[1], a[1], other[1]], 32, (32.0, 32.0))


def _source(tmp_path: Path, name: str, colour: tuple[int, int, int], n: int = 5) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    images, anns = [], []
    for i in range(n):
        arr = np.full((48, 64, 3), 128, np.uint8)
        arr[10:30, 10 + i : 40 + i] = colour
        Image.fromarray(arr).save(folder / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 48})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10 + i, 10, 30, 20]})
    path = folder / "a.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": name}]}))
    return path


def _two_sources(tmp_path: Path, *overrides: str):
    heads = {"warm": {"task": "detect", "classes": ["red"]}, "cool": {"task": "detect", "classes": ["blue"]}}
    sources = {
        "reds": {
            "format": "coco",
            "train": str(_source(tmp_path, "red", (255, 0, 0))),
            "labels": {"warm": {"red": "red"}},
        },
        "blues": {
            "format": "coco",
            "train": str(_source(tmp_path, "blue", (0, 0, 255))),
            "labels": {"cool": {"blue": "blue"}},
        },
    }
    base = [
        "model.imgsz=64",
        "model.backbone=shufflenet_v2_x0_5",
        "model.backbone_weights=null",
        "model.neck_width=16",
        "train.workers=0",
    ]
    return load_config({"heads": heads, "sources": sources}, [*base, "augment.mosaic=1", *PLAIN, *overrides])


def test_a_mosaic_holds_only_its_own_sources_images_and_heads(tmp_path: Path):
    cfg = _two_sources(tmp_path)
    torch.manual_seed(0)
    for source, own, foreign, head in (("reds", 0, 2, "warm"), ("blues", 2, 0, "cool")):
        ds = SourceDataset(cfg, source, "train", train=True)
        counts = []
        for i in range(8):
            sample = ds[i % len(ds)]
            assert set(sample.targets) == {head}  # only the heads this source labels
            pixels = sample.image.int()
            painted_foreign = (pixels[foreign] > 200) & (pixels[own] < 60)
            assert not painted_foreign.any(), "a tile of the other source reached this mosaic"
            counts.append(len(sample.targets[head]["boxes"]))
        assert max(counts) >= 2, "each image has one box: a sample with more is tiled"


def test_the_trainer_turns_mosaic_off_for_the_last_epochs(tmp_path: Path):
    cfg = _two_sources(tmp_path, "train.epochs=2", "augment.close_mosaic=1", f"project={tmp_path}", "train.batch=4")
    lines: list[str] = []
    train(cfg, log=lines.append)
    assert any("mosaic off for the last 1 epochs" in line for line in lines)
