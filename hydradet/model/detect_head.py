"""An anchor-free FCOS-style detection head: its forward, its loss and its post-processing.

Follows torchvision's FCOS (Tian et al. 2019; torchvision/models/detection/fcos.py): center sampling, scale
ranges per level, focal loss, GIoU loss, centerness. GroupNorm in the towers, so a head holds no running
statistics: its state changes only through its own gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, generalized_box_iou_loss, nms, sigmoid_focal_loss

from hydradet.model.assign import atss_assign, encode, fcos_assign
from hydradet.model.layers import conv_tower


@dataclass
class DetectOutput:
    """Raw outputs over all levels' locations, concatenated: L = sum of H_l * W_l."""

    cls_logits: Tensor  # (B, L, C)
    box_ltrb: Tensor  # (B, L, 4): distances from each location to the box's sides, in pixels
    centerness: Tensor  # (B, L) logits
    points: Tensor  # (L, 2): location centres (x, y) in pixels
    strides: Tensor  # (L,)

    def take(self, rows: Tensor) -> DetectOutput:
        """The outputs of these samples of the batch (locations are the same for every sample)."""
        c, b, r = self.cls_logits[rows], self.box_ltrb[rows], self.centerness[rows]
        return DetectOutput(c, b, r, self.points, self.strides)


@dataclass
class Detections:
    boxes: Tensor  # (N, 4) xyxy, in the input image's pixels
    scores: Tensor  # (N,)
    labels: Tensor  # (N,) class index into the head's classes


class DetectHead(nn.Module):
    center_radius = 1.5  # center sampling radius, in strides (torchvision's default)
    focal_alpha, focal_gamma = 0.25, 2.0

    def __init__(
        self,
        width: int,
        num_classes: int,
        num_convs: int,
        strides: tuple[int, ...],
        assigner: str = "fcos",
        cls_target: str = "one",
        loss_norm: str = "batch",
        separable: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.assigner = assigner
        self.cls_target = cls_target
        self.loss_norm = loss_norm
        self.register_buffer("running_fg", torch.zeros(()), persistent=False)
        self.strides = strides
        self.cls_tower = conv_tower(width, num_convs, separable)
        self.box_tower = conv_tower(width, num_convs, separable)
        self.cls_logits = nn.Conv2d(width, num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(width, 4, 3, padding=1)
        self.ctr_pred = nn.Conv2d(width, 1, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Start every location at a 1% foreground prior so that focal loss begins near its equilibrium.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, features: list[Tensor]) -> DetectOutput:
        cls, box, ctr, points, strides = [], [], [], [], []
        for feat, stride in zip(features, self.strides, strict=True):
            c = self.cls_tower(feat)
            b = self.box_tower(feat)
            cls.append(self.cls_logits(c).flatten(2).transpose(1, 2))
            # Distances scale with the level (* stride), as in torchvision's FCOS (norm_reg_targets). softplus, not
            # its relu: once a relu's inputs are all negative its gradient is zero and the head's boxes stay empty
            # for good; that happened to a person head trained on 135 COCO images (BENCHMARKS.md).
            box.append((F.softplus(self.box_pred(b)) * stride).flatten(2).transpose(1, 2))
            ctr.append(self.ctr_pred(b).flatten(1))
            points.append(_grid(feat.shape[-2:], stride, feat.device))
            strides.append(torch.full((points[-1].shape[0],), float(stride), device=feat.device))
        return DetectOutput(
            torch.cat(cls, 1), torch.cat(box, 1), torch.cat(ctr, 1), torch.cat(points), torch.cat(strides)
        )

    def loss(self, out: DetectOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Losses over this head's samples, normalised by this head's own count of positives.

        targets[i] = {"boxes": (G, 4) xyxy pixels, "labels": (G,) class indices} for the i-th sample of `out`,
        optionally "ignore": (K, 4) regions (COCO crowds, VOC difficult) that are neither positives nor
        negatives: background locations inside them get no classification loss.
        """
        sums, num_fg = self.loss_sums(out, targets)
        norm = self.normaliser(num_fg)
        return {k: v / norm for k, v in sums.items()}

    def loss_sums(self, out: DetectOutput, targets: list[dict[str, Tensor]]) -> tuple[dict[str, Tensor], float]:
        """`loss` before normalisation: the loss terms summed over locations, and this batch's count of positives.
        Distributed training (train/distributed.py) divides the sums by the count summed over all processes."""
        gt_idx = torch.stack([self.assign(out.points, out.strides, t["boxes"]) for t in targets])  # (B, L)
        fg = gt_idx >= 0  # gt_idx: index of the matched box, -1 for background
        counted = ~torch.stack([_inside_any(out.points, t.get("ignore")) for t in targets]) | fg

        box_target = torch.zeros_like(out.box_ltrb)
        fg_labels = torch.zeros_like(gt_idx)
        for i, t in enumerate(targets):
            pos = fg[i]
            if pos.any():
                g = gt_idx[i, pos]
                fg_labels[i, pos] = t["labels"][g]
                box_target[i, pos] = t["boxes"][g]
        pts = out.points.unsqueeze(0).expand_as(out.box_ltrb[..., :2])[fg]
        pred_boxes = _decode(pts, out.box_ltrb[fg])
        gt_boxes = box_target[fg]

        cls_target = torch.zeros_like(out.cls_logits)
        if self.cls_target == "iou":
            # Quality focal loss (GFL, Li et al. 2020): a positive's target is the IoU its box reaches, so the
            # score ranks detections by how well they are localised, not only by whether an object is there.
            quality = _paired_iou(pred_boxes.detach(), gt_boxes).clamp(min=0.01)
            cls_target[fg, fg_labels[fg]] = quality
            loss_cls = _quality_focal_loss(out.cls_logits, cls_target, self.focal_gamma)
        else:
            cls_target[fg, fg_labels[fg]] = 1.0
            loss_cls = sigmoid_focal_loss(
                out.cls_logits, cls_target, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none"
            )
        loss_cls = (loss_cls.sum(-1) * counted).sum()

        loss_box = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="sum")
        ctr_target = _centerness(encode(pts, gt_boxes))
        loss_ctr = F.binary_cross_entropy_with_logits(out.centerness[fg], ctr_target, reduction="sum")
        return {"cls": loss_cls, "box": loss_box, "ctr": loss_ctr}, float(fg.sum())

    def normaliser(self, num_fg: float) -> float:
        """What the loss sums are divided by: this batch's count of positives (FCOS), or with loss_norm="running" a
        running mean of this head's own counts (momentum 0.9), so that a batch with few of this head's objects does
        not weigh each of them many times more. Updated only when this head's loss is computed, i.e. on steps with
        its own samples (the rule); a non-persistent buffer, so weights files are unchanged."""
        if self.loss_norm == "batch" or not torch.is_grad_enabled():
            return max(1.0, num_fg)
        with torch.no_grad():
            seen = float(self.running_fg) > 0
            self.running_fg.copy_(self.running_fg * 0.9 + num_fg * 0.1 if seen else torch.tensor(num_fg))
        return max(1.0, float(self.running_fg))

    def distill_loss(self, out: DetectOutput, teacher: DetectOutput) -> dict[str, Tensor]:
        """Match a teacher's outputs on the same images (soft targets; `train.distill_old_heads`).

        Classification and centerness: binary cross-entropy against the teacher's probabilities minus the
        targets' own entropy, i.e. a KL divergence, zero when the outputs agree. Boxes: L1 between the box
        sides' distances, in strides. Centerness and boxes are weighted by the teacher's confidence that an
        object is there (class probability x centerness): its background boxes mean nothing. All terms are
        normalised by the teacher's soft count of objects, as `loss` is by the count of positives.
        """
        p_cls, p_ctr = teacher.cls_logits.sigmoid(), teacher.centerness.sigmoid()
        weight = p_cls.max(-1).values * p_ctr  # (B, L)
        norm = max(1.0, float(p_cls.max(-1).values.sum()))
        loss_cls = _soft_bce(out.cls_logits, p_cls).sum()
        loss_ctr = (_soft_bce(out.centerness, p_ctr) * weight).sum()
        # L1 on the distances in strides rather than GIoU: the teacher's boxes may be degenerate (zero area)
        # where GIoU is 1 even for identical boxes.
        l1 = ((out.box_ltrb - teacher.box_ltrb).abs().sum(-1) / out.strides).mul(weight)
        loss_box = l1.sum()
        return {"distill_cls": loss_cls / norm, "distill_box": loss_box / norm, "distill_ctr": loss_ctr / norm}

    @torch.no_grad()
    def assign(self, points: Tensor, strides: Tensor, boxes: Tensor) -> Tensor:
        """(L,) index of the box each location is a positive of, -1 for background (hydradet/model/assign.py)."""
        if self.assigner == "fcos":
            return fcos_assign(points, strides, boxes, self.center_radius)
        return atss_assign(points, strides, boxes)

    @torch.no_grad()
    def postprocess(
        self, out: DetectOutput, conf: float, iou: float, max_det: int, pre_nms: int = 1000, agnostic: bool = False
    ) -> list[Detections]:
        """Scores = sqrt(class probability x centerness), top-k, per-class NMS.

        agnostic: each location keeps only its best class, then one NMS over all classes (torchvision's `nms`
        instead of `batched_nms`), so two classes of this head never both keep a box on one object. The same
        steps as `export/nms.py` (eager and ONNX)."""
        results = []
        scores_all = torch.sqrt(out.cls_logits.sigmoid() * out.centerness.sigmoid()[..., None])
        for i in range(scores_all.shape[0]):
            if agnostic:
                flat, best = scores_all[i].max(1)  # (L,): the best class of each location, and its score
            else:
                flat = scores_all[i].flatten()
            keep = flat > conf
            cand = keep.nonzero().squeeze(1)
            if cand.numel() > pre_nms:
                cand = cand[flat[cand].topk(pre_nms).indices]
            if agnostic:
                loc, label = cand, best[cand]
            else:
                loc, label = cand // self.num_classes, cand % self.num_classes
            boxes = _decode(out.points[loc], out.box_ltrb[i, loc])
            scores = flat[cand]
            kept = (nms(boxes, scores, iou) if agnostic else batched_nms(boxes, scores, label, iou))[:max_det]
            results.append(Detections(boxes[kept], scores[kept], label[kept]))
        return results


def _paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of a[i] with b[i], (N,) for (N, 4) xyxy boxes: torchvision's box_iou gives all N x N pairs, whose
    diagonal alone is needed here (thousands of positives per batch)."""
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return inter / (area - inter).clamp(min=1e-9)


def _quality_focal_loss(logits: Tensor, target: Tensor, beta: float) -> Tensor:
    """GFL's quality focal loss (Li et al. 2020, eq. 5): BCE against a soft target in [0, 1], scaled by
    |target - p|^beta; elementwise. torchvision's sigmoid_focal_loss assumes binary targets (its (1 - p_t)^gamma
    term is not |y - p|^beta for 0 < y < 1), hence written here."""
    p = logits.sigmoid()
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * (target - p).abs().pow(beta)


def _soft_bce(logits: Tensor, target: Tensor) -> Tensor:
    """BCE against soft targets minus the targets' entropy (the KL divergence of two Bernoullis, >= 0)."""
    entropy = F.binary_cross_entropy(target, target, reduction="none")
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") - entropy


def _inside_any(points: Tensor, regions: Tensor | None) -> Tensor:
    """(L,) True where a point lies inside at least one region (K, 4)."""
    if regions is None or regions.numel() == 0:
        return torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    ltrb = encode(points[:, None, :], regions[None].to(points.device))
    return (ltrb.min(-1).values > 0).any(1)


def _grid(size: torch.Size, stride: int, device: torch.device) -> Tensor:
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * stride


def _decode(points: Tensor, ltrb: Tensor) -> Tensor:
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)


def _centerness(ltrb: Tensor) -> Tensor:
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    return torch.sqrt((lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values))
