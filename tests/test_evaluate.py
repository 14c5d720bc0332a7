"""evaluate(): detections made in letterboxed pixels are mapped back to each image's own pixels and scored
per head, only on the val data of the sources that label that head."""

from __future__ import annotations

import pytest
import torch
from test_dataset import COLOURS, _painted_coco, painted_config
from torch import Tensor, nn

from hydradet.data.dataset import SourceDataset
from hydradet.eval.evaluate import evaluate
from hydradet.model.detect_head import Detections


class _PaintedOracleHead(nn.Module):
    """A perfect detector for painted images: finds each colour's region in the letterboxed pixels."""

    def postprocess(self, images: Tensor, conf: float, iou: float, max_det: int) -> list[Detections]:
        out = []
        for im in images:
            boxes, labels = [], []
            for c, colour in enumerate(COLOURS):
                mask = ((im * 255 - torch.tensor(colour)[:, None, None]).abs().max(0).values < 40).nonzero()
                if len(mask):
                    (y0, x0), (y1, x1) = mask.min(0).values.tolist(), mask.max(0).values.tolist()
                    boxes.append([x0, y0, x1 + 1, y1 + 1])
                    labels.append(c)
            out.append(Detections(torch.tensor(boxes).float(), torch.ones(len(boxes)), torch.tensor(labels)))
        return out


class _Oracle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({"colours": _PaintedOracleHead(), "other": _PaintedOracleHead()})

    def forward(self, images: Tensor, rows: dict) -> dict[str, Tensor]:
        return {h: images for h in rows}


@pytest.mark.parametrize("size", [(160, 100), (100, 160)], ids=["landscape", "portrait"])
def test_a_perfect_detector_scores_map50_one_in_original_pixels(tmp_path, size):
    json_path = _painted_coco(tmp_path, size)
    cfg = painted_config(
        json_path,
        *("model.imgsz=64", "train.epochs=0", "train.workers=0"),
        split="val",
        extra_heads={"other": {"task": "detect", "classes": ["red"]}},
    )
    results = evaluate(_Oracle(), cfg, [SourceDataset(cfg, "painted", "val", train=False)], torch.device("cpu"))
    assert set(results) == {"colours"}  # `other` is not labelled by any val source: not scored at all
    assert results["colours"]["mAP50"] == pytest.approx(1.0)
    assert results["colours"]["mAP50-95"] > 0.6  # edges blur by a pixel or two at 64 px
