"""A source's split as a torch Dataset: images letterboxed, targets per head that the source labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from hydradet.config.schema import Config
from hydradet.data.coco import read_coco
from hydradet.data.records import SplitRecords
from hydradet.data.yolo import read_yolo

PAD_VALUE = 114  # letterbox grey, as YOLO trainers use


@dataclass
class Sample:
    image: Tensor  # (3, S, S) uint8, letterboxed
    targets: dict[str, dict[str, Tensor]]  # head -> {"boxes": (G, 4) xyxy letterboxed pixels, "labels": (G,)}
    source: str
    index: int  # the image's index within its split
    scale: float  # letterbox scale: original pixels = letterboxed pixels / scale (padding is right/bottom)
    orig_size: tuple[int, int]  # (width, height)


@dataclass
class Batch:
    images: Tensor  # (B, 3, S, S) float in [0, 1]
    targets: list[dict[str, dict[str, Tensor]]]
    sources: list[str]
    indices: list[int]
    scales: list[float]
    orig_sizes: list[tuple[int, int]]

    def to(self, device: torch.device | str) -> Batch:
        self.images = self.images.to(device, non_blocking=True)
        self.targets = [{h: {k: v.to(device) for k, v in t.items()} for h, t in tg.items()} for tg in self.targets]
        return self


def collate(samples: list[Sample]) -> Batch:
    return Batch(
        images=torch.stack([s.image for s in samples]).float().div_(255),
        targets=[s.targets for s in samples],
        sources=[s.source for s in samples],
        indices=[s.index for s in samples],
        scales=[s.scale for s in samples],
        orig_sizes=[s.orig_size for s in samples],
    )


def read_split(cfg: Config, source: str, split: str) -> SplitRecords:
    src = cfg.sources[source]
    path = getattr(src, split)
    if src.format == "coco":
        return read_coco(path, src.images)
    return read_yolo(path, split)


class SourceDataset(Dataset[Sample]):
    """The one place where a source's class names become head class ids, and only for the heads it labels."""

    def __init__(self, cfg: Config, source: str, split: str, train: bool, records: SplitRecords | None = None) -> None:
        self.source = source
        self.split = split
        self.imgsz = cfg.model.imgsz
        self.hflip = cfg.train.hflip if train else 0.0
        self.data = records if records is not None else read_split(cfg, source, split)
        self.records = self.data.records
        # head -> (source class name -> head class id); classes mapped to no head are left out here.
        self.class_maps = {
            head: {s: cfg.heads[head].classes.index(h) for s, h in mapping.items()}
            for head, mapping in cfg.sources[source].labels.items()
        }
        self.unmapped = {
            c: n for c, n in self.data.box_counts().items() if not any(c in m for m in self.class_maps.values())
        }

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        rec = self.records[i]
        image, boxes = load_image(rec.path), torch.from_numpy(rec.boxes)
        w, h = image.shape[-1], image.shape[-2]
        if rec.width and rec.height and (rec.width, rec.height) != (w, h) and len(boxes):
            # The annotation was made for another size of this picture (e.g. before a resize): rescale.
            boxes = boxes * torch.tensor([w / rec.width, h / rec.height] * 2)
        if self.hflip and torch.rand(()) < self.hflip:
            # Flip before letterboxing: the padding must stay right/bottom, where the scale-only inverse expects it.
            image = image.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        image, scale = letterbox(image, self.imgsz)
        boxes = boxes * scale
        targets = {}
        for head, cmap in self.class_maps.items():
            keep = [j for j, c in enumerate(rec.classes) if c in cmap]
            targets[head] = {
                "boxes": boxes[keep].reshape(-1, 4).float(),
                "labels": torch.tensor([cmap[rec.classes[j]] for j in keep], dtype=torch.long),
            }
        return Sample(image, targets, self.source, i, scale, (w, h))


def load_image(path: Path) -> Tensor:
    """RGB uint8 (3, H, W), EXIF orientation applied: boxes refer to the picture as a viewer shows it."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def letterbox(image: Tensor, size: int) -> tuple[Tensor, float]:
    """Resize the longer side to `size`, pad right/bottom to a square. Returns the image and the scale."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = TF.resize(image, [nh, nw], antialias=True)
    out = torch.full((3, size, size), PAD_VALUE, dtype=torch.uint8)
    out[:, :nh, :nw] = resized
    return out, scale
