"""A head's decoded outputs and their NMS, in two forms that must agree with `DetectHead.postprocess`:

- `select`: eager, per image (onnxruntime backend on `--raw` exports);
- `nms_padded`: traceable into ONNX: one `NonMaxSuppression` node per head (it does per-image, per-class NMS
  natively, so no coordinate-offset trick and none of its float precision loss), then fixed-size outputs.

Both keep the postprocess's order of steps: score = sqrt(class probability x centerness), score > conf, the
`pre_nms` best (location, class) pairs of each image, per-class NMS, the `max_det` best. With `agnostic`, each
location first keeps only its best class (so the pairs are locations), and the NMS is one over all classes: in
ONNX, a `NonMaxSuppression` over a single score column, the class id then read from the location's best class.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms

from hydradet.model.detect_head import Detections, DetectOutput

PRE_NMS = 1000  # DetectHead.postprocess's default


def decode(out: DetectOutput) -> tuple[Tensor, Tensor]:
    """(B, L, 4) xyxy boxes in input pixels and (B, L, C) scores, for every location of every level."""
    scores = torch.sqrt(out.cls_logits.sigmoid() * out.centerness.sigmoid()[..., None])
    boxes = torch.cat([out.points - out.box_ltrb[..., :2], out.points + out.box_ltrb[..., 2:]], -1)
    return boxes, scores


def select(
    boxes: Tensor,
    scores: Tensor,
    conf: float,
    iou: float,
    max_det: int,
    pre_nms: int = PRE_NMS,
    agnostic: bool = False,
) -> list[Detections]:
    """Eager NMS of decoded outputs, one `Detections` per image, as `DetectHead.postprocess` computes it.

    boxes: (B, L, 4) xyxy input pixels; scores: (B, L, C). agnostic: one NMS over all classes, each location
    with its best class."""
    num_classes = scores.shape[-1]
    results = []
    for i in range(scores.shape[0]):
        flat, best = scores[i].max(1) if agnostic else (scores[i].flatten(), None)
        cand = (flat > conf).nonzero().squeeze(1)
        if cand.numel() > pre_nms:
            cand = cand[flat[cand].topk(pre_nms).indices]
        if best is not None:
            loc, label = cand, best[cand]
            kept = nms(boxes[i, loc], flat[cand], iou)[:max_det]
        else:
            loc, label = cand // num_classes, cand % num_classes
            kept = batched_nms(boxes[i, loc], flat[cand], label, iou)[:max_det]
        results.append(Detections(boxes[i, loc][kept], flat[cand][kept], label[kept]))
    return results


def nms_padded(
    boxes: Tensor,
    scores: Tensor,
    conf: float,
    iou: float,
    max_det: int,
    pre_nms: int = PRE_NMS,
    agnostic: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Traceable NMS -> boxes (B, max_det, 4), scores (B, max_det), class_ids (B, max_det) int64.

    boxes: (B, L, 4) xyxy input pixels; scores: (B, L, C). Each image's detections come first, best score first;
    the rest of its rows are padding: boxes 0, score 0, class id -1. agnostic: the NMS node sees one score
    column (each location's best class score), so one box per object whatever its class.
    """
    best = None
    if agnostic:
        top, best = scores.max(2, keepdim=True)  # (B, L, 1) and the class it came from
        scores = top
    batch, num_loc, num_classes = scores.shape
    flat = scores.flatten(1)
    # Only each image's pre_nms best (location, class) pairs may survive, as in postprocess (ties at the k-th
    # score all stay: the one place where the two may differ, and only when scores are exactly equal).
    kth = flat.topk(min(pre_nms, num_loc * num_classes), dim=1).values[:, -1:]
    flat = torch.where(flat >= kth, flat, torch.zeros_like(flat))
    per_class = flat.view(batch, num_loc, num_classes).transpose(1, 2).contiguous()  # (B, C, L), as ONNX wants
    sel = _NonMaxSuppression.apply(boxes, per_class, max_det, iou, conf)  # (K, 3): image, class, location
    b, c, loc = sel[:, 0], sel[:, 1], sel[:, 2]
    score = per_class[b, c, loc]
    if best is not None:
        c = best[b, loc, 0]  # the single column's class: the location's best
    order = torch.argsort(score, descending=True)
    b, c, loc, score = b[order], c[order], loc[order], score[order]
    # Rank of each kept detection within its image: a running count per image over the score order.
    one_hot = (b[:, None] == torch.arange(batch, device=b.device)[None]).long()
    rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1
    fits = rank < max_det
    slot = (b * max_det + rank)[fits]
    out_boxes = torch.zeros(batch * max_det, 4, dtype=boxes.dtype, device=boxes.device)
    out_boxes = out_boxes.index_put((slot,), boxes[b, loc][fits])
    out_scores = torch.zeros(batch * max_det, dtype=scores.dtype, device=scores.device)
    out_scores = out_scores.index_put((slot,), score[fits])
    out_ids = torch.full((batch * max_det,), -1, dtype=torch.int64, device=scores.device)
    out_ids = out_ids.index_put((slot,), c[fits])
    return out_boxes.view(batch, max_det, 4), out_scores.view(batch, max_det), out_ids.view(batch, max_det)


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX `NonMaxSuppression` (opset >= 11) when exported; torchvision's batched_nms when run eagerly, which is
    what tracing runs to follow the graph. Outputs (K, 3) int64 rows [image, class, location]."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou: float, conf: float) -> Tensor:  # type: ignore[override]
        num_classes = scores.shape[1]
        img, cls, loc = (scores > conf).nonzero(as_tuple=True)
        kept = batched_nms(boxes[img, loc], scores[img, cls, loc], img * num_classes + cls, iou)
        rows = torch.stack([img[kept], cls[kept], loc[kept]], 1)
        # ONNX's max_output_boxes_per_class: the best max_per_class of each (image, class).
        group = rows[:, 0] * num_classes + rows[:, 1]
        rank = torch.zeros_like(group)
        for g in group.unique():
            members = (group == g).nonzero().squeeze(1)
            rank[members] = torch.arange(len(members))
        return rows[rank < max_per_class]

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou: float, conf: float):  # type: ignore[no-untyped-def]
        def const(value: float, dtype: torch.dtype):  # type: ignore[no-untyped-def]
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            const(max_per_class, torch.int64),
            const(iou, torch.float32),
            const(conf, torch.float32),
            center_point_box_i=0,
        )
