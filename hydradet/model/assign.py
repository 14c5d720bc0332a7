"""Label assignment for the detect head: which locations are taught which ground-truth box.

Each function maps one image's locations to the index of the box they are positives of, -1 for background.
points: (L, 2) location centres (x, y) in pixels; strides: (L,) their levels' strides; boxes: (G, 4) xyxy pixels.
torchvision has FCOS's rule inside its FCOS head and no ATSS; both are written here for one image's tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou


def background(points: Tensor) -> Tensor:
    return torch.full((points.shape[0],), -1, dtype=torch.long, device=points.device)


def fcos_assign(points: Tensor, strides: Tensor, boxes: Tensor, center_radius: float = 1.5) -> Tensor:
    """FCOS (Tian et al. 2019, torchvision's FCOS): each location -> the smallest box whose centre region (radius
    center_radius strides) holds it and whose size suits the location's level: (0, 64] px at the finest level,
    (4 s, 8 s] at stride s, beyond 8 s at the coarsest. A box too small for its level's range gets no positive."""
    if boxes.numel() == 0:
        return background(points)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # (G, 2)
    radius = strides[:, None] * center_radius  # (L, 1)
    near_center = ((points[:, None, :] - centers[None]).abs() < radius[..., None]).all(-1)  # (L, G)
    ltrb = encode(points[:, None, :], boxes[None])  # (L, G, 4)
    inside = ltrb.min(-1).values > 0
    reach = ltrb.max(-1).values
    lower = torch.where(strides == strides.min(), 0.0, strides * 4)[:, None]
    upper = torch.where(strides == strides.max(), math.inf, strides * 8)[:, None]
    ok = near_center & inside & (reach > lower) & (reach <= upper)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand_as(ok)
    best_area, best = torch.where(ok, area, math.inf).min(1)
    return torch.where(torch.isfinite(best_area), best, -1)


def atss_assign(points: Tensor, strides: Tensor, boxes: Tensor, topk: int = 9, anchor_scale: float = 8.0) -> Tensor:
    """ATSS (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free Detection"): per box, on
    every level the `topk` locations nearest its centre are candidates; their IoUs with the box, of a square
    anchor of side anchor_scale x stride at each location, set the box's own threshold, mean + std; candidates at
    or above it whose centre lies inside the box are positives. A location claimed by several boxes takes the one
    it overlaps most. Every box keeps candidates on every level, so small boxes are not left without positives."""
    if boxes.numel() == 0:
        return background(points)
    half = strides[:, None] * anchor_scale / 2
    anchors = torch.cat([points - half, points + half], 1)  # (L, 4)
    ious = box_iou(anchors, boxes)  # (L, G)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    dist = torch.cdist(points, centers)  # (L, G)
    candidates = []
    for s in strides.unique():
        level = (strides == s).nonzero().squeeze(1)
        k = min(topk, level.numel())
        candidates.append(level[dist[level].topk(k, dim=0, largest=False).indices])  # (k, G)
    cand = torch.cat(candidates)  # (K, G): location indices
    cand_iou = ious.gather(0, cand)
    threshold = cand_iou.mean(0) + cand_iou.std(0)  # (G,)
    inside = encode(points[cand], boxes[None].expand(cand.shape[0], -1, -1)).min(-1).values > 0.01
    chosen = (cand_iou >= threshold[None]) & inside  # (K, G)
    positive = torch.zeros_like(ious, dtype=torch.bool)
    positive.scatter_(0, cand, chosen)  # a location is a candidate of a box at most once
    best_iou, best = torch.where(positive, ious, -1.0).max(1)
    return torch.where(best_iou >= 0, best, -1)


def encode(points: Tensor, boxes: Tensor) -> Tensor:
    """Distances (left, top, right, bottom) from points to the sides of boxes, in pixels (broadcast)."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], -1)


ASSIGNERS = {"fcos": fcos_assign, "atss": atss_assign}
