"""A source's split as a torch Dataset: images letterboxed, targets per head that the source labels."""

from __future__ import annotations

import difflib
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
from hydradet.errors import ConfigError

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
        _check_mapped_classes_exist(cfg, source, self.data.class_names)
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
        image = load_image(self.records[i].path)
        w, h = image.shape[-1], image.shape[-2]
        targets = self.head_targets(i, (w, h))
        if self.hflip and torch.rand(()) < self.hflip:
            # Flip before letterboxing: the padding must stay right/bottom, where the scale-only inverse expects it.
            image = image.flip(-1)
            for t in targets.values():
                b = t["boxes"]
                t["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
        image, scale = letterbox(image, self.imgsz)
        for t in targets.values():
            t["boxes"] = t["boxes"] * scale
        return Sample(image, targets, self.source, i, scale, (w, h))

    def head_targets(self, i: int, size: tuple[int, int]) -> dict[str, dict[str, Tensor]]:
        """Image i's targets for the heads its source labels, in the pixels of the image as decoded (w, h)."""
        rec = self.records[i]
        boxes = torch.from_numpy(rec.boxes).float().reshape(-1, 4)
        if rec.width and rec.height and (rec.width, rec.height) != size and len(boxes):
            # The annotation was made for another size of this picture (e.g. before a resize): rescale.
            boxes = boxes * torch.tensor([size[0] / rec.width, size[1] / rec.height] * 2)
        targets = {}
        for head, cmap in self.class_maps.items():
            keep = [j for j, c in enumerate(rec.classes) if c in cmap]
            labels = torch.tensor([cmap[rec.classes[j]] for j in keep], dtype=torch.long)
            targets[head] = {"boxes": boxes[keep].reshape(-1, 4), "labels": labels}
        return targets


def _check_mapped_classes_exist(cfg: Config, source: str, class_names: list[str]) -> None:
    """A misspelled source class would silently make that head learn its objects as background."""
    for head, mapping in cfg.sources[source].labels.items():
        for src_cls in mapping:
            if src_cls not in class_names:
                hint = difflib.get_close_matches(src_cls, class_names, n=1)
                raise ConfigError(
                    f"sources.{source}.labels.{head}.{src_cls}: unknown source class {src_cls!r}"
                    f"{f'; did you mean {hint[0]!r}?' if hint else ''} The source's classes: {class_names}"
                )


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


def unletterbox(boxes: Tensor, scale: float, size: tuple[int, int]) -> Tensor:
    """Boxes in letterboxed pixels -> original image pixels (w, h), clipped to the image."""
    w, h = size
    out = (boxes / scale).clamp(min=0)
    out[:, 0::2] = out[:, 0::2].clamp(max=w)
    out[:, 1::2] = out[:, 1::2].clamp(max=h)
    return out
