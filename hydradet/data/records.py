"""What every format reader produces: one ImageRecord per image, boxes in pixels with source class names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hydradet.errors import DataError

__all__ = ["DataError", "ImageRecord", "SplitRecords", "clean_boxes", "xywh_to_xyxy"]


@dataclass
class ImageRecord:
    path: Path
    boxes: np.ndarray  # (N, 4) float32 xyxy in pixels of the image as a viewer shows it
    classes: list[str]  # the source's class name of each box
    width: int = 0  # 0 = unknown until the image is opened
    height: int = 0


@dataclass
class SplitRecords:
    """One split (train or val) of one source, as read from disk."""

    records: list[ImageRecord]
    class_names: list[str]  # the source's vocabulary, in its own order
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, reported at start

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def box_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.class_names, 0)
        for r in self.records:
            for c in r.classes:
                counts[c] = counts.get(c, 0) + 1
        return counts


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1) if len(b) else np.zeros((0, 4), np.float32)


def clean_boxes(
    boxes: np.ndarray, classes: list[str], w: int, h: int, out: SplitRecords
) -> tuple[np.ndarray, list[str]]:
    """Drop (and count) boxes that are NaN/inf or empty; clip the rest to the image."""
    finite = np.isfinite(boxes).all(1)
    if w and h:
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    ok = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if (~ok).any():
        out.skip("box with zero/negative size or NaN (dropped)", int((~ok).sum()))
    return boxes[ok], [c for c, k in zip(classes, ok, strict=True) if k]
