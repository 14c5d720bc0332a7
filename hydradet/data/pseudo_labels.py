"""A teacher's detections as a head's targets (`train.pseudo`, hydradet/train/pseudo.py holds the why).

A detect head trained on a source that does not label it may learn there only from its own teacher's boxes, never
from that source's labels. How a teacher's scores become targets, as in the multi-dataset detectors that face
missing annotations (Zhao et al., ECCV 2020, "Object Detection with a Unified Label Space from Multiple Datasets";
Unbiased Teacher, ICLR 2021; Efficient Teacher, 2023): a confident box is a positive, a doubtful one an ignore
region, and the rest background, so that an unlabelled object the teacher half-sees is never taught as background.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor


def split_by_score(boxes: Tensor, scores: Tensor, labels: Tensor, high: float | None, low: float) -> dict[str, Tensor]:
    """One image's teacher detections for one head -> that head's targets on the image.

    boxes: (N, 4) xyxy pixels; scores: (N,) in [0, 1]; labels: (N,) the head's class ids.
    score >= high -> "boxes" / "labels" (positives); low <= score < high -> "ignore" / "ignore_labels" (regions
    where the head gets no classification loss, model/detect_head.py); below low -> dropped (background).
    high None: no positives, every detection at or above low is an ignore region. "ignore" is present only when
    some detection falls in the band, as for real labels (data/dataset.py)."""
    boxes, labels = boxes.float().reshape(-1, 4), labels.long()
    positive = scores >= high if high is not None else torch.zeros_like(scores, dtype=torch.bool)
    band = (scores >= low) & ~positive
    out = {"boxes": boxes[positive], "labels": labels[positive]}
    if band.any():
        out["ignore"], out["ignore_labels"] = boxes[band], labels[band]
    return out


def teacher_heads(
    sources: list[str], targets: list[dict[str, dict[str, Tensor]]], source_heads: Mapping[str, Iterable[str]]
) -> list[set[str]]:
    """Per sample: the heads whose targets are a teacher's, i.e. the heads it has targets for although its source
    does not label them (data/dataset.py gives a source's own targets only for the heads it labels). An empty
    teacher target counts: the teacher saw nothing there, so the head learns background."""
    return [{h for h in t if h not in source_heads[s]} for s, t in zip(sources, targets, strict=True)]


@dataclass
class CachedDetections:
    """A file teacher's detections on every image of one source's train split, for the heads it does not label.

    detections[head][i] = (boxes (N, 4) xyxy in the pixels of image i as decoded, scores (N,), labels (N,)), every
    detection at or above `low`; computed once before training (train/pseudo.py) and turned into targets per
    sample by `targets`, so that augmentation and mosaic then move them exactly like the source's own labels."""

    detections: dict[str, list[tuple[Tensor, Tensor, Tensor]]]
    high: dict[str, float | None]  # head -> its positive threshold (None: no positives)
    low: float

    def targets(self, i: int) -> dict[str, dict[str, Tensor]]:
        """Image i's pseudo targets, one entry per head (empty ones too: a mosaic needs the same heads on all four)."""
        return {
            head: split_by_score(*per_image[i], self.high[head], self.low)
            for head, per_image in self.detections.items()
        }
