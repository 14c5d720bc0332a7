"""Boxes stay on their objects under every augmentation step and the default pipeline; evaluation never augments.

Each object is a rectangle painted a unique colour. After each step, every surviving box must still cover its
own colour, must not be a sliver of the object it came from, and each head's labels must stay with its boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_dataset import _painted_coco, painted_config
from torch import Tensor

from hydradet.config import load_config
from hydradet.config.load import DEFAULT_YAML
from hydradet.config.schema import AugmentConfig
from hydradet.data.augment import Augment, PadRightBottom, ScaleJitter, pack, unpack
from hydradet.data.dataset import SourceDataset, letterbox, load_image

IMGSZ = 128
SEEDS = range(30)
BACKGROUND = (128, 128, 128)
# Saturated and far apart, so that colour jitter cannot move one onto another or onto the greys.
PALETTE = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
# Fractions of (w, h); non-overlapping, some at the borders so that crops cut them.
RECTS = [
    (0.00, 0.00, 0.30, 0.25),
    (0.40, 0.05, 0.95, 0.30),
    (0.70, 0.40, 1.00, 0.75),
    (0.05, 0.35, 0.35, 0.90),
    (0.45, 0.80, 0.85, 1.00),
    (0.45, 0.40, 0.60, 0.70),
]
# Two heads over the same objects with their own class ids: (object index, label) per head.
HEADS = {"even": [(0, 0), (2, 1), (4, 2)], "all": [(i, 5 - i) for i in range(6)]}

OFF = {"hflip": 0.0, "scale": (1.0, 1.0), "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
DEFAULT = AugmentConfig.model_validate(yaml.safe_load(DEFAULT_YAML.read_text())["augment"])
CONFIGS = {
    "letterbox": DEFAULT.model_copy(update=OFF),
    "hflip": DEFAULT.model_copy(update={**OFF, "hflip": 1.0}),
    "zoom-in-crop": DEFAULT.model_copy(update={**OFF, "scale": (1.2, 2.5)}),
    "zoom-out": DEFAULT.model_copy(update={**OFF, "scale": (0.4, 0.9)}),
    "colour": DEFAULT.model_copy(update={**OFF, "brightness": 0.3, "contrast": 0.3, "saturation": 0.5, "hue": 0.04}),
    "default": DEFAULT,
}
SIZES = {"landscape": (200, 120), "portrait": (120, 200)}


def _painted(size: tuple[int, int]) -> tuple[Tensor, dict[str, dict[str, Tensor]], dict[str, dict[int, int]]]:
    """Image (3, H, W), targets per head, and head -> label -> palette index."""
    w, h = size
    arr = np.full((h, w, 3), BACKGROUND, np.uint8)
    boxes = []
    for (fx0, fy0, fx1, fy1), colour in zip(RECTS, PALETTE, strict=True):
        x0, y0, x1, y1 = round(fx0 * w), round(fy0 * h), round(fx1 * w), round(fy1 * h)
        arr[y0:y1, x0:x1] = colour
        boxes.append([x0, y0, x1, y1])
    all_boxes = torch.tensor(boxes, dtype=torch.float32)
    targets = {
        head: {"boxes": all_boxes[[i for i, _ in pairs]], "labels": torch.tensor([lab for _, lab in pairs])}
        for head, pairs in HEADS.items()
    }
    colour_of = {head: {lab: i for i, lab in pairs} for head, pairs in HEADS.items()}
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), targets, colour_of


def _nearest_colour(image: Tensor) -> Tensor:
    """(H, W) index into PALETTE of each pixel's colour, -1 for grey (background, padding).

    Judged by chroma (the pixel minus its grey level), which colour jitter scales and turns a little but keeps
    pointing the same way; greys stay grey under brightness, contrast, saturation and hue changes.
    """
    pix = image.permute(1, 2, 0).float()
    chroma = pix - pix.mean(-1, keepdim=True)
    refs = torch.tensor(PALETTE, dtype=torch.float32)
    refs = refs - refs.mean(-1, keepdim=True)
    cos = (chroma @ refs.T) / (chroma.norm(dim=-1, keepdim=True) * refs.norm(dim=-1) + 1e-6)
    return torch.where(chroma.norm(dim=-1) > 15, cos.argmax(-1), -1)


def _check_boxes_on_objects(image: Tensor, targets, colour_of, where: str) -> None:
    nearest = _nearest_colour(image)
    for head, t in targets.items():
        assert len(t["boxes"]) == len(t["labels"]), where
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            # Between a crop and ClipBoxes a box may reach outside the image: judge its visible part.
            h, w = nearest.shape
            x0, x1 = (round(min(max(v, 0), w)) for v in box[0::2])
            y0, y1 = (round(min(max(v, 0), h)) for v in box[1::2])
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue  # too thin to judge its pixels (or outside, before ClipBoxes); the sliver check judges it
            inner = nearest[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]  # off the resampled edges
            match = (inner == colour_of[head][label]).float().mean().item()
            assert match > 0.9, f"{where}: {head} box {box} label {label} covers its colour only {match:.0%}"


def _areas(targets) -> dict[tuple[str, int], float]:
    return {
        (head, lab): float((b[2] - b[0]) * (b[3] - b[1]))
        for head, t in targets.items()
        for b, lab in zip(t["boxes"], t["labels"].tolist(), strict=True)
    }


def _padded_right_bottom(before: Tensor, after: Tensor) -> bool:
    """The content sits at the top-left, untouched, and everything else is the letterbox grey."""
    h, w = before.shape[-2:]
    rest = after.clone()
    rest[:, :h, :w] = 114
    return torch.equal(after[:, :h, :w], before) and bool((rest == 114).all())


@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_boxes_stay_on_their_objects_after_every_step(name, size):
    cfg = CONFIGS[name]
    image, targets, colour_of = _painted(size)
    aug = Augment(cfg, IMGSZ)
    lost = 0
    for seed in SEEDS:
        torch.manual_seed(seed)
        sample = pack(image, targets)
        scaled_areas: dict[tuple[str, int], float] = {}
        for step in aug.transforms:
            before = sample["image"].as_subclass(Tensor)
            sample = step(sample)
            img, tg = unpack(sample, list(targets))
            where = f"{name}, seed {seed}, after {type(step).__name__}"
            _check_boxes_on_objects(img, tg, colour_of, where)
            areas = _areas(tg)
            if isinstance(step, ScaleJitter):
                scaled_areas = areas  # the objects' full areas at this sample's scale
            if isinstance(step, PadRightBottom):
                assert _padded_right_bottom(before, img), f"{where}: padding is not right/bottom only"
            for key, area in areas.items():
                # Not a sliver: a crop may cut an object, but what survives keeps a real part of it. (Zero: a box
                # that ClipBoxes collapsed for the sanitiser to drop next; the min_size check below catches a stray.)
                assert area == 0 or area >= cfg.min_visible * scaled_areas[key] - 1e-3, f"{where}: {key}: {area:.0f} px"
        b = torch.cat([t["boxes"] for t in tg.values()])
        assert ((b[:, 2:] - b[:, :2]) >= cfg.min_size).all(), f"{name}, seed {seed}: a box below min_size survived"
        assert img.shape == (3, IMGSZ, IMGSZ) and img.dtype == torch.uint8
        lost += sum(len(targets[h]["labels"]) - len(t["labels"]) for h, t in tg.items())

        # The pipeline as the dataset runs it gives exactly what the steps gave one by one.
        torch.manual_seed(seed)
        img2, tg2, _ = aug(image, targets)
        assert torch.equal(img2, img)
        assert all(torch.equal(tg2[h]["boxes"], tg[h]["boxes"]) for h in tg)
    if name == "zoom-in-crop":
        assert lost > 0, "zooming in by up to 2.5x never cut an object away: the crop was not exercised"
    elif name != "default":
        assert lost == 0, f"{name} must not drop boxes, dropped {lost}"


def test_with_everything_off_the_pipeline_is_exactly_letterbox():
    image, targets, _ = _painted(SIZES["portrait"])
    out, tg, scale = Augment(CONFIGS["letterbox"], IMGSZ)(image, targets)
    ref, ref_scale = letterbox(image, IMGSZ)
    assert torch.equal(out, ref) and scale == ref_scale
    for head, t in targets.items():
        # torchvision scales boxes by the rounded size's own ratio per axis, where the resized pixels really are;
        # letterbox's single scale differs from it by at most the rounding of the size.
        assert torch.allclose(tg[head]["boxes"], t["boxes"] * ref_scale, atol=0.5)
        assert torch.equal(tg[head]["labels"], t["labels"])


def test_a_sample_without_boxes_or_heads_passes_through():
    image, _, _ = _painted(SIZES["landscape"])
    empty = {"h": {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}}
    out, tg, _ = Augment(DEFAULT, IMGSZ)(image, empty)
    assert out.shape == (3, IMGSZ, IMGSZ) and tg["h"]["boxes"].shape == (0, 4)
    out, tg, _ = Augment(DEFAULT, IMGSZ)(image, {})
    assert out.shape == (3, IMGSZ, IMGSZ) and tg == {}


@pytest.mark.parametrize("size", [(160, 100), (100, 160)], ids=["landscape", "portrait"])
def test_evaluation_samples_are_exactly_letterbox_whatever_the_augment_config(tmp_path: Path, size):
    json_path = _painted_coco(tmp_path, size)
    heavy = ["augment.hflip=1", "augment.scale=[1.5, 2]", "augment.brightness=0.5", "augment.hue=0.1"]
    for overrides, train in (([*heavy], False), (["augment.enabled=false", *heavy], True)):
        cfg = painted_config(json_path, "model.imgsz=96", *overrides)
        ds = SourceDataset(cfg, "painted", "train", train=train)
        assert ds.augment is None
        torch.manual_seed(0)
        sample = ds[0]
        ref, scale = letterbox(load_image(ds.records[0].path), 96)
        assert torch.equal(sample.image, ref) and sample.scale == scale
        expected = torch.from_numpy(ds.records[0].boxes).float() * scale
        assert torch.equal(sample.targets["colours"]["boxes"], expected)


def test_training_samples_are_augmented_by_default(tmp_path: Path):
    cfg = load_config(
        {
            "heads": {"colours": {"task": "detect", "classes": ["red"]}},
            "sources": {
                "painted": {
                    "format": "coco",
                    "train": str(_painted_coco(tmp_path, (160, 100))),
                    "labels": {"colours": {"red": "red"}},
                }
            },
        },
        ["model.imgsz=96"],
    )
    ds = SourceDataset(cfg, "painted", "train", train=True)
    assert ds.augment is not None and cfg.augment.enabled
    images = []
    for seed in range(4):
        torch.manual_seed(seed)
        images.append(ds[0].image)
    assert any(not torch.equal(images[0], im) for im in images[1:])


def test_default_yaml_documents_every_augment_knob():
    defaults = yaml.safe_load(DEFAULT_YAML.read_text())
    assert set(defaults["augment"]) == set(AugmentConfig.model_fields)
    assert "hflip" not in defaults["train"]
