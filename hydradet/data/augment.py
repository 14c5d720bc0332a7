"""Training augmentation: torchvision.transforms.v2 over the image and every head's boxes at once.

The pipeline ends in hydradet's letterbox (content top-left, grey padding right/bottom), so with every knob off
it gives exactly `letterbox()`. Scale jitter, crop and flip all act on the content before it is padded: the
padding never moves, and a box never lands in it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from hydradet.config.schema import AugmentConfig

PAD_VALUE = 114  # letterbox grey, as YOLO trainers use; `letterbox()` pads with it too

Targets = dict[str, dict[str, Tensor]]
_IGNORE = "\0ignore"  # suffix of the pseudo-head that carries a head's ignore regions (no head name has a NUL)


def _image_hw(flat_inputs: list[Any]) -> tuple[int, int]:
    image = next(x for x in flat_inputs if isinstance(x, tv_tensors.Image))
    h, w = F.get_size(image)
    return h, w


class ScaleJitter(v2.Transform):
    """Resize so the longer side is `size` times a factor drawn from `scale`; (1, 1) is letterbox's resize.

    The sizes are rounded exactly as `letterbox()` rounds them, so the unjittered resize is bit-identical.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__()
        self.size, self.scale = size, scale

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_hw(flat_inputs)
        lo, hi = self.scale
        factor = lo if lo == hi else float(torch.empty(()).uniform_(lo, hi))
        s = self.size / max(h, w) * factor
        return {"hw": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["hw"], antialias=True)


class CropAtMost(v2.Transform):
    """A random window of at most size x size: only a side longer than `size` (zoomed in) is cut.

    The window always starts inside the content, so nothing is padded here and the image's top-left stays
    content; boxes are shifted but not clipped (ClipBoxes decides which survive).
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_hw(flat_inputs)
        ch, cw = min(h, self.size), min(w, self.size)
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        return {"box": (top, left, ch, cw), "noop": (ch, cw) == (h, w)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["noop"]:
            return inpt
        return self._call_kernel(F.crop, inpt, *params["box"])


class ClipBoxes(v2.Transform):
    """Clip boxes to the image; collapse those that kept less than `min_visible` of their area.

    A collapsed box has zero width, so the SanitizeBoundingBoxes that follows drops it together with its
    labels: an object cut down to a sliver would teach the head that a fragment is the whole object.
    """

    def __init__(self, min_visible: float) -> None:
        super().__init__()
        self.min_visible = min_visible

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.BoundingBoxes):
            return inpt
        boxes = inpt.as_subclass(Tensor)
        clipped = F.clamp_bounding_boxes(boxes, format=inpt.format, canvas_size=inpt.canvas_size, clamping_mode="hard")
        area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(1)
        kept = (clipped[:, 2:] - clipped[:, :2]).clamp(min=0).prod(1)
        hidden = kept < self.min_visible * area
        clipped[hidden, 2] = clipped[hidden, 0]
        return tv_tensors.wrap(clipped, like=inpt)


class PadRightBottom(v2.Transform):
    """Pad to size x size with grey on the right and bottom only: the letterbox convention that lets
    `unletterbox` map boxes back with one division."""

    def __init__(self, size: int, fill: int = PAD_VALUE) -> None:
        super().__init__()
        self.size, self.fill = size, fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_hw(flat_inputs)
        return {"padding": [0, 0, self.size - w, self.size - h]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.pad, inpt, params["padding"], fill=self.fill)


def _labels_and_heads(sample: dict[str, Any]) -> tuple[Tensor, Tensor]:
    return sample["labels"], sample["heads"]


def build_transforms(cfg: AugmentConfig, imgsz: int) -> list[v2.Transform]:
    """The training pipeline as a list (the tests run each step alone too). Steps switched off are left out."""
    steps: list[v2.Transform] = [ScaleJitter(imgsz, cfg.scale)]
    if cfg.scale[1] > 1:
        steps.append(CropAtMost(imgsz))
    steps += [
        ClipBoxes(cfg.min_visible),
        # Keeps labels and head ids aligned with the boxes that survive.
        v2.SanitizeBoundingBoxes(min_size=cfg.min_size, min_area=1.0, labels_getter=_labels_and_heads),
    ]
    if cfg.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    if any((cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)):
        # Before padding, so the padding stays exactly the grey that evaluation pads with.
        steps.append(v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))
    steps.append(PadRightBottom(imgsz))
    return steps


class Augment:
    """image (3, H, W) uint8 + targets per head in its pixels -> the training sample's image, targets and scale.

    All heads' boxes travel through the transforms as one BoundingBoxes tensor with a head id per box, so every
    geometric step is drawn once per image and all heads see the same picture.
    """

    def __init__(self, cfg: AugmentConfig, imgsz: int, transforms: list[v2.Transform] | None = None) -> None:
        self.imgsz = imgsz
        self.transforms = transforms if transforms is not None else build_transforms(cfg, imgsz)
        self.pipeline = v2.Compose(self.transforms)

    def __call__(self, image: Tensor, targets: Targets) -> tuple[Tensor, Targets, float]:
        h, w = image.shape[-2:]
        # Ignore regions travel as pseudo-heads, so every geometric step moves them with the objects. Image-level
        # labels (classify, regress) have no geometry: they pass through as they are.
        boxed = [head for head, t in targets.items() if "boxes" in t]
        flat = {head: {"boxes": targets[head]["boxes"], "labels": targets[head]["labels"]} for head in boxed}
        for head in boxed:
            if "ignore" in targets[head]:
                flat[head + _IGNORE] = {"boxes": targets[head]["ignore"], "labels": targets[head]["ignore_labels"]}
        out_image, out_flat = unpack(self.pipeline(pack(image, flat)), list(flat))
        out_targets = {head: out_flat[head] if head in out_flat else dict(t) for head, t in targets.items()}
        for head in boxed:
            if head + _IGNORE in out_flat:
                out_targets[head]["ignore"] = out_flat[head + _IGNORE]["boxes"]
                out_targets[head]["ignore_labels"] = out_flat[head + _IGNORE]["labels"]
        # The nominal letterbox scale: a training sample's scale is never used to map boxes back (evaluation
        # does not augment), and after a jittered crop no single scale could.
        return out_image, out_targets, self.imgsz / max(h, w)


def pack(image: Tensor, targets: Targets) -> dict[str, Any]:
    """The v2 sample: the image, all heads' boxes as one BoundingBoxes, their labels and head ids (config order)."""
    heads = list(targets)
    h, w = image.shape[-2:]
    none = torch.zeros(0, dtype=torch.long)  # so that a sample without heads still concatenates
    boxes = torch.cat([torch.zeros(0, 4), *(targets[k]["boxes"].reshape(-1, 4).float() for k in heads)])
    return {
        "image": tv_tensors.Image(image),
        # clamping_mode=None: a crop must leave boxes unclipped so that ClipBoxes can see what was cut away.
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w), clamping_mode=None),
        "labels": torch.cat([none, *(targets[k]["labels"] for k in heads)]),
        "heads": torch.cat([none, *(torch.full((len(targets[k]["labels"]),), j) for j, k in enumerate(heads))]),
    }


def unpack(sample: dict[str, Any], heads: list[str]) -> tuple[Tensor, Targets]:
    """Back to an image and targets per head, as plain tensors: tv_tensor subclasses would cost time in collate
    and in pickling from the loader's workers."""
    boxes, ids = sample["boxes"].as_subclass(Tensor), sample["heads"]
    targets = {
        k: {"boxes": boxes[ids == j].reshape(-1, 4), "labels": sample["labels"][ids == j]} for j, k in enumerate(heads)
    }
    return sample["image"].as_subclass(Tensor), targets
