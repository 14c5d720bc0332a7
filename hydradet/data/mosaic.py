"""Mosaic augmentation (YOLOv4; Ultralytics' `mosaic`): four training images of one source tiled around a random
centre, cut to one imgsz x imgsz picture, so that every sample shows more objects, at more positions and against
more backgrounds.

The four images always come from the same source (`SourceDataset` draws them from itself): the source decides
which heads a sample supervises, so a mosaic across sources would supervise a head in some quadrants and leave its
objects unlabelled in others. Written here because torchvision's transforms.v2 has no mosaic (it transforms one
sample at a time).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from hydradet.data.augment import PAD_VALUE, Targets

_BOXES = (("boxes", "labels"), ("ignore", "ignore_labels"))


def mosaic(
    images: list[Tensor], targets: list[Targets], size: int, center: tuple[float, float]
) -> tuple[Tensor, Targets]:
    """Four (3, H, W) uint8 images and their per-head targets (xyxy pixels) -> one (3, size, size) image and targets.

    Each image is resized so its longer side is `size` (as letterbox does) and placed in one quadrant of a
    2 size x 2 size canvas, its inner corner at `center` (x, y in [size / 2, 3 size / 2]); the size x size window
    centred there is returned. Boxes are shifted, not clipped: the augmentation that follows clips them and drops
    the slivers (ClipBoxes, SanitizeBoundingBoxes). Every image must carry the same heads (one source)."""
    if len(images) != 4 or len({tuple(t) for t in targets}) != 1:
        raise ValueError("mosaic needs four images with targets for the same heads (one source)")
    canvas = torch.full((3, 2 * size, 2 * size), PAD_VALUE, dtype=torch.uint8)
    xc, yc = round(center[0]), round(center[1])
    pieces: dict[str, dict[str, list[Tensor]]] = {h: {k: [] for pair in _BOXES for k in pair} for h in targets[0]}
    for q, (image, t) in enumerate(zip(images, targets, strict=True)):
        h, w = image.shape[-2:]
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = F.resize(image, [nh, nw], antialias=True)
        # Quadrants: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; each touches the centre.
        x0 = xc - nw if q in (0, 2) else xc
        y0 = yc - nh if q in (0, 1) else yc
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + nw, 2 * size), min(y0 + nh, 2 * size)
        canvas[:, cy0:cy1, cx0:cx1] = resized[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        for head, target in t.items():
            for box_key, label_key in _BOXES:
                if box_key in target:
                    pieces[head][box_key].append(target[box_key].reshape(-1, 4).float() * scale + shift)
                    pieces[head][label_key].append(target[label_key])
    left, top = xc - size // 2, yc - size // 2
    window = torch.tensor([left, top, left, top], dtype=torch.float32)
    out: Targets = {}
    for head, parts in pieces.items():
        out[head] = {"boxes": torch.cat(parts["boxes"]) - window, "labels": torch.cat(parts["labels"])}
        if parts["ignore"]:
            out[head]["ignore"] = torch.cat(parts["ignore"]) - window
            out[head]["ignore_labels"] = torch.cat(parts["ignore_labels"])
    return canvas[:, top : top + size, left : left + size].contiguous(), out
