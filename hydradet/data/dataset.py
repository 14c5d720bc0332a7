"""A source's split as a torch Dataset: images letterboxed, targets per head that the source labels."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from hydradet.config.schema import ColumnLabel, Config
from hydradet.data.augment import PAD_VALUE, Augment
from hydradet.data.cache import read_cached
from hydradet.data.coco import read_coco
from hydradet.data.csv_labels import read_csv_labels
from hydradet.data.image import load_image  # also imported from here by data check and the tests
from hydradet.data.mosaic import mosaic
from hydradet.data.pseudo_labels import CachedDetections
from hydradet.data.records import SplitRecords, is_resize
from hydradet.data.voc import read_voc
from hydradet.data.yolo import read_yolo
from hydradet.errors import ConfigError, DataError

MAX_DECODE_TRIES = 16  # consecutive undecodable images before a source is declared unreadable


@dataclass
class Sample:
    image: Tensor  # (3, S, S) uint8, letterboxed
    # head -> detect: {"boxes": (G, 4) xyxy letterboxed pixels, "labels": (G,)}; classify: {"label": () long};
    # regress: {"value": () float}. Only the heads the source labels.
    targets: dict[str, dict[str, Tensor]]
    source: str
    index: int  # the image's index within its split
    scale: float  # letterbox scale: original pixels = letterboxed pixels / scale (padding is right/bottom);
    # exact for evaluation samples, nominal for augmented training samples (their crop shifts the content)
    orig_size: tuple[int, int]  # (width, height)
    skipped: tuple[str, ...] = ()  # files that failed to decode and were replaced by this sample


@dataclass
class Batch:
    images: Tensor  # (B, 3, S, S) float in [0, 1]
    targets: list[dict[str, dict[str, Tensor]]]
    sources: list[str]
    indices: list[int]
    scales: list[float]
    orig_sizes: list[tuple[int, int]]
    skipped: list[str] = field(default_factory=list)  # files replaced because they failed to decode

    def to(self, device: torch.device | str, channels_last: bool = False) -> Batch:
        self.images = self.images.to(device, non_blocking=True)
        if channels_last:  # train.channels_last: the memory format the model was converted to
            self.images = self.images.contiguous(memory_format=torch.channels_last)
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
        skipped=[p for s in samples for p in s.skipped],
    )


def read_split(cfg: Config, source: str, split: str) -> SplitRecords:
    """A source's split as its reader gives it, through the label cache (data/cache.py): read again only when one
    of its inputs changed. Raises DataError naming the file, line or id and the fix."""
    src = cfg.sources[source]
    path = getattr(src, split)
    # What decides the read besides the split's path: the format, a COCO images folder, the split's name for a
    # YOLO data YAML (its key) and for csv sources the columns and class values of their labels. Nothing else:
    # a train and a val split of the same file share one cache.
    identity: dict[str, object] = {"format": src.format, "images": str(src.images) if src.images else None}
    if src.format == "yolo":
        identity["split"] = split
    if src.format == "csv":
        identity["source"] = src.model_dump(mode="json")
    return read_cached(path, identity, lambda: _read(cfg, source, split))


def _read(cfg: Config, source: str, split: str) -> SplitRecords:
    src = cfg.sources[source]
    path = getattr(src, split)
    if src.format == "coco":
        return read_coco(path, src.images)
    if src.format == "voc":
        return read_voc(path)
    if src.format == "csv":
        return read_csv_labels(cfg, source, split)
    return read_yolo(path, split)


class SourceDataset(Dataset[Sample]):
    """The one place where a source's class names become head class ids, and only for the heads it labels."""

    def __init__(self, cfg: Config, source: str, split: str, train: bool, records: SplitRecords | None = None) -> None:
        self.source = source
        self.split = split
        self.imgsz = cfg.model.imgsz
        # Evaluation never augments: its samples must be exactly letterbox(), which predict also uses.
        self.augment = Augment(cfg.augment, self.imgsz) if train and cfg.augment.enabled else None
        self.data = records if records is not None else read_split(cfg, source, split)
        self.records = self.data.records
        _check_mapped_classes_exist(cfg, source, self.data.class_names)
        # head -> (source class name -> head class id), for detect heads; classes mapped to no head are left out.
        self.class_maps = {
            head: {s: cfg.heads[head].classes.index(h) for s, h in mapping.items()}
            for head, mapping in cfg.sources[source].labels.items()
            if not isinstance(mapping, ColumnLabel)
        }
        # head -> task, for the image-level heads (csv sources): their labels are in each record's image_labels.
        self.image_heads = {h: cfg.heads[h].task for h in cfg.sources[source].labels if h not in self.class_maps}
        self.class_names = {h: cfg.heads[h].classes for h in self.image_heads}
        self.unmapped = {
            c: n for c, n in self.data.box_counts().items() if not any(c in m for m in self.class_maps.values())
        }
        # Probability that a training sample is a mosaic of four of this source's images (data/mosaic.py); the
        # trainer sets it to 0 for the last `augment.close_mosaic` epochs. Image-level labels cannot be tiled.
        self.mosaic = cfg.augment.mosaic if self.augment is not None and not self.image_heads else 0.0
        # `train.pseudo` with a teacher file: its cached boxes for the heads this source does not label, set by the
        # trainer (train/pseudo.py). They join the targets before augmentation, so they move like real labels.
        self.pseudo: CachedDetections | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        if self.mosaic > 0 and float(torch.rand(())) < self.mosaic:
            return self._mosaic_sample(i)
        i, image, failed = self._decode(i)
        w, h = image.shape[-1], image.shape[-2]
        targets = self.head_targets(i, (w, h))
        if self.augment is not None:
            image, targets, scale = self.augment(image, targets)
        else:
            image, scale = letterbox(image, self.imgsz)
            for t in targets.values():
                if "boxes" not in t:
                    continue  # an image-level label does not move with the pixels
                t["boxes"] = t["boxes"] * scale
                if "ignore" in t:
                    t["ignore"] = t["ignore"] * scale
        return Sample(image, targets, self.source, i, scale, (w, h), skipped=failed)

    def _mosaic_sample(self, i: int) -> Sample:
        """Image i and three random others of this same source, tiled, then augmented like any sample."""
        assert self.augment is not None
        decoded = [self._decode(j) for j in [i, *torch.randint(0, len(self), (3,)).tolist()]]
        targets = [self.head_targets(j, (im.shape[-1], im.shape[-2])) for j, im, _ in decoded]
        center = (torch.rand(2) * self.imgsz + self.imgsz / 2).tolist()
        image, merged = mosaic([im for _, im, _ in decoded], targets, self.imgsz, (center[0], center[1]))
        image, merged, _ = self.augment(image, merged)
        failed = tuple(f for _, _, fs in decoded for f in fs)
        # scale / size describe the mosaic itself: training never maps a sample's boxes back to a file's pixels.
        return Sample(image, merged, self.source, decoded[0][0], 1.0, (self.imgsz, self.imgsz), skipped=failed)

    def _decode(self, i: int) -> tuple[int, Tensor, tuple[str, ...]]:
        """Image i, or if it fails to decode, the next image of this source that does.

        The scan checks headers only, and files can change after it: a bad file must cost one sample, not the
        epoch. The failed paths travel in the Sample (and Batch) so that the trainer counts them even when
        worker processes do the loading.
        """
        failed: list[str] = []
        for k in range(min(len(self), MAX_DECODE_TRIES)):
            j = (i + k) % len(self)
            try:
                return j, load_image(self.records[j].path), tuple(failed)
            except Exception:  # PIL signals a bad file with many exception types; all mean "use another"
                failed.append(str(self.records[j].path))
        raise DataError(
            f"{self.source}/{self.split}: {len(failed)} images in a row failed to decode, e.g. {failed[0]}; "
            "are the files still there? `hydradet data check CONFIG --decode` lists every one"
        )

    def head_targets(self, i: int, size: tuple[int, int]) -> dict[str, dict[str, Tensor]]:
        """Image i's targets for the heads its source labels, in the pixels of the image as decoded (w, h)."""
        rec = self.records[i]
        boxes = torch.from_numpy(rec.boxes).float().reshape(-1, 4)
        ignore = torch.from_numpy(rec.ignore).float().reshape(-1, 4)
        if rec.width and rec.height and (rec.width, rec.height) != size and is_resize((rec.width, rec.height), size):
            # The file was resized since it was read (records.to_file_size's rule): the boxes follow. With another
            # aspect ratio it is not a resize, and the boxes stay in the pixels they were drawn on.
            factor = torch.tensor([size[0] / rec.width, size[1] / rec.height] * 2)
            boxes, ignore = boxes * factor, ignore * factor
        targets = {}
        for head, cmap in self.class_maps.items():
            keep = [j for j, c in enumerate(rec.classes) if c in cmap]
            labels = torch.tensor([cmap[rec.classes[j]] for j in keep], dtype=torch.long)
            targets[head] = {"boxes": boxes[keep].reshape(-1, 4), "labels": labels}
            ign = [j for j, c in enumerate(rec.ignore_classes) if c in cmap]
            if ign:  # only where there are any: most samples carry none and collate stays lean
                targets[head]["ignore"] = ignore[ign].reshape(-1, 4)
                targets[head]["ignore_labels"] = torch.tensor([cmap[rec.ignore_classes[j]] for j in ign])
        if self.pseudo is not None:
            # only for heads this source does not label: on its own heads its labels always win
            targets.update({h: t for h, t in self.pseudo.targets(i).items() if h not in targets})
        for head, task in self.image_heads.items():
            value = rec.image_labels[head]
            targets[head] = (
                {"label": torch.tensor(int(value))} if task == "classify" else {"value": torch.tensor(value)}
            )
        return targets

    def supervision(self) -> dict[str, str]:
        """head -> what this split gives it, for the summaries: boxes for detect heads, labels for the others."""
        out = {}
        for head, cmap in self.class_maps.items():
            out[head] = f"{self.records.count_boxes(cmap)} boxes"
        for head in self.image_heads:
            out[head] = f"{self.records.count_labels(head)} labels"
        return out


def split_datasets(cfg: Config, split: str) -> list[SourceDataset]:
    """Every source's `split` ("train" augments, "val" does not), in config order; sources without it are left out."""
    return [
        SourceDataset(cfg, s, split, train=split == "train") for s, src in cfg.sources.items() if getattr(src, split)
    ]


def _check_mapped_classes_exist(cfg: Config, source: str, class_names: list[str]) -> None:
    """A misspelled source class would silently make that head learn its objects as background."""
    for head, mapping in cfg.sources[source].labels.items():
        if isinstance(mapping, ColumnLabel):
            continue  # csv columns are checked against the header by the reader
        for src_cls in mapping:
            if src_cls not in class_names:
                hint = difflib.get_close_matches(src_cls, class_names, n=1)
                raise ConfigError(
                    f"sources.{source}.labels.{head}.{src_cls}: unknown source class {src_cls!r}"
                    f"{f'; did you mean {hint[0]!r}?' if hint else ''} The source's classes: {class_names}"
                )


def with_regress_stats(cfg: Config, train_sets: list[SourceDataset]) -> Config:
    """cfg with each regress head's `mean`/`std` set, where the config leaves them out, to its train labels'.

    The head learns (value - mean) / std, so that L1 and the learning rate suit a label on any scale (ages 0-100,
    prices in thousands); the stats travel in the weights' metadata with the head's config, so predictions come
    back in the label's units. Config values, not tensors: nothing an optimizer step or the EMA could move.
    """
    heads = dict(cfg.heads)
    for name, head in cfg.heads.items():
        if head.task != "regress" or (head.mean is not None and head.std is not None):
            continue
        values = np.concatenate([np.zeros(0), *(ds.records.label_values(name) for ds in train_sets)])
        if not len(values):
            continue  # no train data: the head does not change, and 0 / 1 keep its outputs as they are
        std = float(values.std()) if values.std() > 0 else 1.0
        mean = head.mean if head.mean is not None else float(values.mean())
        heads[name] = head.model_copy(update={"mean": mean, "std": head.std or std})
    return cfg.model_copy(update={"heads": heads})


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
