"""What benchmarks/partial_labels.py measures on trained models, through one interface whatever trained them
(hydradet or YOLO11n): accuracy by one evaluator, parameters and GFLOPs, latency in interleaved rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from _common import count_flops, n_params, time_interleaved
from _partial_task import Val

from hydradet.config.schema import Config, PredictConfig
from hydradet.data.dataset import unletterbox
from hydradet.eval.coco_map import ImageBoxes, coco_map

# A predictor maps a ready batch (on the model's device) to, per image, (boxes xyxy letterboxed px, scores,
# class names): every model is scored through this one interface.
Prediction = list[tuple[np.ndarray, np.ndarray, np.ndarray]]
Predictor = Callable[[torch.Tensor, float, float, int], Prediction]


@dataclass
class Trained:
    """One trained model of a variant (separate variants have one per head)."""

    predict: Predictor
    module: torch.nn.Module
    wall_s: float  # the whole training call: data reading, epochs, the final evaluation, saving
    loop_s: float  # the epochs' batch loops only
    images_seen: int  # epochs x training images
    train_flops_per_image: float  # forward + backward of one training step, per image (FlopCounterMode)
    forward: Callable[[torch.Tensor], object]  # for FLOPs: the network's forward without NMS
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Variant:
    name: str
    models: list[Trained]
    note: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def joined(predictors: list[Predictor]) -> Predictor:
    """Separate models as one: each runs on the batch, their detections are pooled per image."""

    def predict(x: torch.Tensor, conf: float, iou: float, max_det: int) -> Prediction:
        outs = [p(x, conf, iou, max_det) for p in predictors]
        return [
            tuple(np.concatenate(parts) for parts in zip(*per_image, strict=True))
            for per_image in zip(*outs, strict=True)
        ]

    return predict  # type: ignore[return-value]


def score(predict: Predictor, val: Val, cfg: Config, device: torch.device) -> dict[str, dict[str, float]]:
    """Per head: the model's detections of that head's classes, scored by coco_map against that head's ground
    truth. A merged model's detections are split by class name, so every model meets the same evaluator.

    mAP ranks detections by score, so a model that learned to doubt a kind of object (a merged model taught that
    unlabelled objects are background) can keep its mAP while a user, who keeps detections above a confidence,
    loses them: `recall50@conf` is the recall at IoU 0.5 of the detections at predict's conf (default.yaml)."""
    preds: dict[str, list[ImageBoxes]] = {h: [] for h in val.heads}
    for batch in val.batches:
        per_image = predict(batch.images.to(device), cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det)
        for (boxes, scores, names), scale, size in zip(per_image, batch.scales, batch.orig_sizes, strict=True):
            boxes = unletterbox(torch.from_numpy(np.ascontiguousarray(boxes)).float(), scale, size).numpy()
            for h, classes in val.heads.items():
                keep = np.isin(names, classes)
                labels = np.array([classes.index(n) for n in names[keep]], dtype=np.int64)
                preds[h].append(ImageBoxes(boxes[keep].reshape(-1, 4), labels, scores[keep]))
    out = {}
    for h, classes in val.heads.items():
        keeps = [p.scores >= cfg.predict.conf for p in preds[h]]
        above = [ImageBoxes(p.boxes[k], p.labels[k], p.scores[k]) for p, k in zip(preds[h], keeps, strict=True)]
        ranked = coco_map(val.gts[h], preds[h], classes)
        out[h] = {"mAP50-95": ranked["mAP50-95"], "mAP50": ranked["mAP50"]}
        out[h]["recall50@conf"] = coco_map(val.gts[h], above, classes)["recall50"]
    return out


def measure_cost(variants: list[Variant], x1: torch.Tensor) -> dict[str, dict[str, int]]:
    """Params, GFLOPs: one forward at imgsz, batch 1, every model of the variant (all tasks together)."""
    out = {}
    for v in variants:
        with torch.no_grad():
            fl = sum(count_flops(lambda t=t: t.forward(x1)) for t in v.models)
        out[v.name] = {"params": sum(n_params(t.module) for t in v.models), "flops": fl}
    return out


def measure_latency(
    variants: list[Variant], first8: torch.Tensor, pcfg: PredictConfig, rounds: int, devices: Sequence[str]
) -> dict[str, dict[tuple[str, int], float]]:
    """ms per image at batch 1 and 8 per device: forward + NMS at predict's settings on ready letterboxed
    batches; all variants in the same interleaved rounds, so that load from other jobs hits them alike."""
    out: dict[str, dict[tuple[str, int], float]] = {}
    for dev in devices:
        calls = {}
        for v in variants:
            mods = [(t.predict, t.module.to(dev)) for t in v.models]
            for n in (1, 8):
                xb = first8[:n].to(dev)
                calls[(v.name, n)] = lambda xb=xb, mods=mods: [
                    p(xb, pcfg.conf, pcfg.iou, pcfg.max_det) for p, _ in mods
                ]
        out[dev] = {k: ms / k[1] for k, ms in time_interleaved(calls, rounds, dev).items()}
    return out
