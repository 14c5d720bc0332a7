"""The FCOS-style head: assignment by level and centre, ignore regions, decoding in post-processing."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from hydradet.model.detect_head import DetectHead, DetectOutput

STRIDES = (8, 16, 32)


def _head_and_output(size: int = 256, num_classes: int = 2) -> tuple[DetectHead, DetectOutput]:
    torch.manual_seed(0)
    head = DetectHead(16, num_classes, 1, STRIDES)
    feats = [torch.randn(1, 16, size // s, size // s, requires_grad=True) for s in STRIDES]
    return head, head(feats)


def test_each_positive_location_is_near_the_centre_and_its_reach_suits_its_level():
    # FCOS: a location's largest distance to the box sides must lie in its level's range: (0, 64] at stride 8,
    # (64, 128] at 16, (128, inf) at 32; and it must lie within 1.5 strides of the box centre.
    head, out = _head_and_output()
    ranges = {8: (0, 64), 16: (64, 128), 32: (128, float("inf"))}
    for side in (20, 40, 100, 200):
        box = torch.tensor([[20.0, 20.0, 20.0 + side, 20.0 + side]])
        pos = head.assign(out.points, out.strides, box) == 0
        assert pos.any(), side
        pts, strides = out.points[pos], out.strides[pos]
        reach = torch.cat([pts - box[0, :2], box[0, 2:] - pts], 1).max(1).values
        for r, s in zip(reach.tolist(), strides.tolist(), strict=True):
            lo, hi = ranges[int(s)]
            assert lo < r <= hi, (side, s, r)
        assert ((pts - (box[0, :2] + side / 2)).abs() < 1.5 * strides[:, None]).all()
    small = head.assign(out.points, out.strides, torch.tensor([[20.0, 20.0, 60.0, 60.0]]))
    assert out.strides[small == 0].unique().tolist() == [8.0]


def test_smallest_box_wins_a_location_claimed_by_two():
    head, out = _head_and_output()
    boxes = torch.tensor([[0.0, 0.0, 60.0, 60.0], [20.0, 20.0, 44.0, 44.0]])
    matched = head.assign(out.points, out.strides, boxes)
    at_centre = (out.points == torch.tensor([28.0, 28.0])).all(1) & (out.strides == 8)
    assert matched[at_centre].item() == 1


def test_background_inside_an_ignore_region_gets_no_classification_loss():
    head, out = _head_and_output()
    target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "labels": torch.tensor([0])}
    ignore = torch.tensor([[120.0, 120.0, 220.0, 220.0]])
    plain = head.loss(out, [target])
    with_ignore = head.loss(out, [{**target, "ignore": ignore}])
    assert with_ignore["cls"] < plain["cls"]
    assert torch.equal(with_ignore["box"], plain["box"])

    grad = torch.autograd.grad(with_ignore["cls"], out.cls_logits)[0][0].abs().sum(-1)
    inside = ((out.points > 120) & (out.points < 220)).all(1)
    assert (grad[inside] == 0).all()
    assert (grad[~inside] > 0).all()


def test_postprocess_decodes_a_confident_location_to_its_box():
    head, out = _head_and_output()
    with torch.no_grad():
        out.cls_logits.fill_(-10.0)
        out.centerness.fill_(10.0)
        loc = int(((out.points == torch.tensor([100.0, 100.0])).all(1) & (out.strides == 8)).nonzero()[0])
        out.cls_logits[0, loc, 1] = 10.0
        out.box_ltrb[0, loc] = torch.tensor([30.0, 20.0, 10.0, 40.0])
    (det,) = head.postprocess(out, conf=0.5, iou=0.5, max_det=10)
    assert det.labels.tolist() == [1]
    assert det.boxes.tolist() == [[70.0, 80.0, 110.0, 140.0]]


def test_box_branch_pushed_all_negative_still_learns():
    """A box branch whose outputs are negative everywhere must still get a gradient: with a relu (torchvision's
    FCOS) it would be zero, and the head's boxes would stay empty for the rest of training."""
    head, _ = _head_and_output()
    with torch.no_grad():
        head.box_pred.bias.fill_(-5.0)
    feats = [torch.randn(1, 16, 256 // s, 256 // s) for s in STRIDES]
    target = {"boxes": torch.tensor([[60.0, 60.0, 160.0, 180.0]]), "labels": torch.tensor([0])}
    opt = torch.optim.Adam(head.box_pred.parameters(), lr=0.1)
    losses = []
    for _ in range(15):
        box = head.loss(head(feats), [target])["box"]
        opt.zero_grad()
        box.backward()
        assert head.box_pred.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(float(box.detach()))
    assert losses[-1] < losses[0] - 0.2, losses


def test_atss_gives_every_box_positives_inside_it_whatever_its_size():
    # FCOS leaves a box without positives when no location of its size's level lies near its centre; ATSS keeps
    # candidates on every level, so every box that holds a location centre gets some.
    torch.manual_seed(0)
    head = DetectHead(16, 1, 1, STRIDES, assigner="atss")
    out = head([torch.randn(1, 16, 256 // s, 256 // s) for s in STRIDES])
    for box in ([9.0, 9.0, 21.0, 30.0], [30.0, 40.0, 100.0, 70.0], [10.0, 10.0, 250.0, 250.0], [100, 3, 110, 90]):
        b = torch.tensor([box])
        pos = head.assign(out.points, out.strides, b) == 0
        assert pos.any(), box
        inside = (out.points[pos] > b[0, :2]).all(1) & (out.points[pos] < b[0, 2:]).all(1)
        assert inside.all(), box


def test_atss_picks_the_box_a_location_overlaps_most():
    torch.manual_seed(0)
    head = DetectHead(16, 1, 1, STRIDES, assigner="atss")
    out = head([torch.randn(1, 16, 256 // s, 256 // s) for s in STRIDES])
    boxes = torch.tensor([[0.0, 0.0, 80.0, 80.0], [10.0, 10.0, 90.0, 90.0]])
    alone = [head.assign(out.points, out.strides, boxes[g : g + 1]) == 0 for g in range(2)]  # each box's own picks
    both = alone[0] & alone[1]
    assert both.any(), "the case needs locations that both boxes choose"
    half = out.strides[:, None] * 4
    ious = box_iou(torch.cat([out.points - half, out.points + half], 1), boxes)
    matched = head.assign(out.points, out.strides, boxes)
    assert torch.equal(matched[both], ious[both].argmax(1))
    assert (matched[alone[0] & ~alone[1]] == 0).all() and (matched[alone[1] & ~alone[0]] == 1).all()
    assert (matched[~alone[0] & ~alone[1]] == -1).all()
    assert (head.assign(out.points, out.strides, torch.zeros(0, 4)) == -1).all()


def test_quality_target_teaches_each_positive_the_iou_its_box_reaches():
    # With cls_target=iou (GFL), the classification loss is minimal where the positive's probability equals the
    # IoU of its predicted box with its ground truth, not 1: scores then rank detections by localisation.
    torch.manual_seed(0)
    head = DetectHead(16, 1, 1, STRIDES, cls_target="iou")
    feats = [torch.randn(1, 16, 128 // s, 128 // s) for s in STRIDES]
    out = head(feats)
    target = {"boxes": torch.tensor([[20.0, 20.0, 70.0, 90.0]]), "labels": torch.tensor([0])}
    fg = head.assign(out.points, out.strides, target["boxes"]) == 0
    pred = torch.cat([out.points[fg] - out.box_ltrb[0, fg, :2], out.points[fg] + out.box_ltrb[0, fg, 2:]], 1)
    iou = box_iou(pred, target["boxes"])[:, 0].detach()
    losses = []
    for prob in (iou, torch.ones_like(iou) * 0.999, torch.full_like(iou, 0.01)):
        logits = out.cls_logits.detach().clone()
        logits[0, fg, 0] = torch.logit(prob.clamp(1e-4, 1 - 1e-4))
        tweaked = DetectOutput(logits, out.box_ltrb, out.centerness, out.points, out.strides)
        losses.append(float(head.loss(tweaked, [target])["cls"]))
    assert losses[0] < losses[1] and losses[0] < losses[2]


def test_separable_towers_cost_a_fraction_of_full_ones_and_still_learn():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    feats = [torch.randn(2, 64, 256 // s, 256 // s) for s in STRIDES]
    flops = {}
    for separable in (False, True):
        torch.manual_seed(0)
        head = DetectHead(64, 1, 2, STRIDES, separable=separable)
        with FlopCounterMode(display=False) as counter:
            head(feats)
        flops[separable] = counter.get_total_flops()
        target = {"boxes": torch.tensor([[20.0, 20.0, 90.0, 120.0]]), "labels": torch.tensor([0])}
        opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
        first = None
        one = [f[:1] for f in feats]
        for _ in range(30):
            loss = sum(head.loss(head(one), [target]).values())
            first = float(loss.detach()) if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert float(loss.detach()) < 0.6 * first, separable
    assert flops[True] < 0.35 * flops[False]
