"""Per-head evaluation: each val set is run once, through the heads its source labels; each head is scored
on its own val data only (a head is never scored on images whose source does not label it).

Metrics by task: detect COCO mAP50-95 and mAP50 (pycocotools); classify top-1 accuracy; regress mean absolute
error in the label's units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from hydradet.config.schema import Config, HeadConfig
from hydradet.data.dataset import Batch, SourceDataset, collate, unletterbox
from hydradet.data.workers import ignore_sigint
from hydradet.eval.coco_map import ImageBoxes, coco_evaluation
from hydradet.eval.curves import DetectCurves
from hydradet.model.detector import HydraDetector


@dataclass
class ShownBatch:
    """A val batch kept for pictures (val_batch<k>_labels.jpg / _pred.jpg), in letterboxed pixels, on the CPU."""

    images: Tensor  # (B, 3, S, S) float in [0, 1]
    sources: list[str]
    targets: list[dict[str, dict[str, Tensor]]]  # per sample, the heads its source labels (as Batch.targets)
    # Per sample, the same heads' predictions: detect {"boxes" (N, 4), "labels", "scores"} (all of eval.conf's),
    # classify {"label", "score"}, regress {"value"}.
    preds: list[dict[str, dict[str, Tensor]]]


@dataclass
class EvalDetails:
    """What the pictures of an evaluation need beyond its metrics (eval/run_log.py); `evaluate` fills it when
    given one. Per head: its val images' ground truth and predictions (detect: ImageBoxes in original pixels;
    classify / regress: (truth, predicted class id or value) per image) and its curves (detect heads with ground
    truth and detections); and the first batch of each val source, up to `keep_batches` of them."""

    keep_batches: int = 3
    gts: dict[str, list[ImageBoxes]] = field(default_factory=dict)
    preds: dict[str, list[ImageBoxes]] = field(default_factory=dict)
    pairs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    curves: dict[str, DetectCurves] = field(default_factory=dict)
    batches: list[ShownBatch] = field(default_factory=list)


@torch.no_grad()
def evaluate(
    model: HydraDetector,
    cfg: Config,
    val_sets: list[SourceDataset],
    device: torch.device,
    details: EvalDetails | None = None,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[Any], list[Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """head -> its metrics (METRICS[task]) and "images", over the val splits of the sources that label it.

    Only the heads both the model and cfg have are evaluated (`hydradet val` may give a config with fewer heads
    than the model). A progress bar (images) on stderr, erased when done so that training logs stay one line per
    epoch. `details`, if given, is filled with what the pictures of the evaluation need (EvalDetails).

    Several processes: shard=(rank, world) evaluates every world-th image of each val set from `rank` on, and
    `gather` (all-gather of a Python object, train/distributed.py) brings every rank's per-image results together
    in the images' order, so the metrics equal one process's. Every rank must call it; the metrics are complete on
    every rank."""
    was_training = model.training
    model.eval()
    shared = [h for h in model.heads if h in cfg.heads]
    tasks = {h: cfg.heads[h].task for h in shared}
    gts: dict[str, list[ImageBoxes]] = {h: [] for h in shared}
    preds: dict[str, list[ImageBoxes]] = {h: [] for h in shared}
    # Image-level heads: per image, (truth, prediction): class ids (classify) or values (regress).
    pairs: dict[str, list[tuple[float, float]]] = {h: [] for h in shared}
    order: dict[str, list[tuple[int, int]]] = {h: [] for h in shared}  # (val set, image) of each entry above
    rank, world = shard
    total = sum(len(range(rank, len(ds), world)) for ds in val_sets)
    with tqdm(total=total, desc="val", unit="img", leave=False, dynamic_ncols=True, disable=rank > 0) as bar:
        for s, ds in enumerate(val_sets):
            heads = [h for h in cfg.sources[ds.source].heads() if h in tasks]
            bar.set_postfix_str(ds.source)
            part = ds if world == 1 else Subset(ds, range(rank, len(ds), world))
            loader = DataLoader(
                part,
                batch_size=cfg.eval.batch,
                collate_fn=collate,
                num_workers=min(cfg.train.workers, 2),
                worker_init_fn=ignore_sigint,
            )
            for k, batch in enumerate(loader):
                outputs = model(batch.images.to(device), dict.fromkeys(heads))
                dets = {
                    h: model.heads[h].postprocess(outputs[h], cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det)
                    if tasks[h] == "detect"
                    else model.heads[h].postprocess(outputs[h]).cpu()
                    for h in heads
                }
                if details is not None and k == 0 and len(details.batches) < details.keep_batches:
                    details.batches.append(_shown(batch, heads, tasks, dets))
                for i, (scale, size) in enumerate(zip(batch.scales, batch.orig_sizes, strict=True)):
                    # Ground truth straight from the records, in original pixels: only predictions travel back.
                    targets = ds.head_targets(batch.indices[i], size)
                    for head in heads:
                        order[head].append((s, batch.indices[i]))
                        if tasks[head] == "classify":
                            pairs[head].append((int(targets[head]["label"]), int(dets[head][i].argmax())))
                            continue
                        if tasks[head] == "regress":
                            pairs[head].append((float(targets[head]["value"]), float(dets[head][i])))
                            continue
                        d = dets[head][i]
                        gts[head].append(ImageBoxes.ground_truth(targets[head]))
                        boxes = unletterbox(d.boxes.cpu(), scale, size)
                        preds[head].append(ImageBoxes(boxes.numpy(), d.labels.cpu().numpy(), d.scores.cpu().numpy()))
                bar.update(len(batch.indices))
    model.train(was_training)
    if world > 1 and gather is not None:
        gts, preds, pairs = _merged(gather((order, gts, preds, pairs)), shared)
    results = {}
    for head in shared:
        if gts[head]:
            metrics, curves = coco_evaluation(gts[head], preds[head], cfg.heads[head].classes, cfg.eval.max_det)
            objects = sum(len(g.boxes) for g in gts[head])  # the evidence behind f1_conf (eval/calibration.py)
            results[head] = {**metrics, "images": len(gts[head]), "objects": objects}
            if details is not None and curves is not None:
                details.curves[head] = curves
        elif pairs[head]:
            truth, pred = np.array(pairs[head], np.float64).T
            if tasks[head] == "classify":
                results[head] = {"accuracy": float((truth == pred).mean()), "correct": int((truth == pred).sum())}
            else:
                results[head] = {"MAE": float(np.abs(truth - pred).mean())}
            results[head]["images"] = len(truth)
    if details is not None:
        details.gts, details.preds, details.pairs = gts, preds, pairs
    return results


def _merged(parts: list[Any], heads: list[str]) -> tuple[dict, dict, dict]:
    """Every rank's (order, gts, preds, pairs), merged per head and sorted into the images' order: pycocotools
    breaks score ties by image order, so the same order gives the same metrics as one process."""
    merged: tuple[dict, dict, dict] = ({}, {}, {})
    for head in heads:
        for j in range(3):
            entries = [(o, v) for order, *lists in parts for o, v in zip(order[head], lists[j][head], strict=False)]
            merged[j][head] = [v for _, v in sorted(entries, key=lambda e: e[0])]
    return merged


def _shown(batch: Batch, heads: list[str], tasks: dict[str, str], dets: dict) -> ShownBatch:
    """A val batch and its predictions, copied to the CPU for pictures."""
    preds: list[dict[str, dict[str, Tensor]]] = []
    for i in range(len(batch.indices)):
        per_head: dict[str, dict[str, Tensor]] = {}
        for h in heads:
            if tasks[h] == "detect":
                d = dets[h][i]
                per_head[h] = {"boxes": d.boxes.cpu(), "labels": d.labels.cpu(), "scores": d.scores.cpu()}
            elif tasks[h] == "classify":
                per_head[h] = {"label": dets[h][i].argmax(), "score": dets[h][i].max()}
            else:
                per_head[h] = {"value": dets[h][i]}
        preds.append(per_head)
    targets = [{h: {k: v.cpu() for k, v in tg[h].items()} for h in heads if h in tg} for tg in batch.targets]
    return ShownBatch(batch.images.cpu(), list(batch.sources), targets, preds)


# task -> the metrics `evaluate` reports for it, as results.csv names them (`<head>/<metric>`).
METRICS = {"detect": ("mAP50-95", "mAP50", "f1_conf"), "classify": ("accuracy",), "regress": ("MAE",)}


def fitness(results: dict[str, dict[str, float]], heads: dict[str, HeadConfig]) -> float:
    """One number to pick the best epoch by, higher is better: the mean over evaluated heads of a score in
    [0, 1] per head. detect: mAP50-95; classify: accuracy; regress: 1 / (1 + MAE / std), with std the train
    labels' spread (the head config's), so that predicting the mean (MAE ~ 0.8 std) scores ~0.55 and a perfect
    head 1, whatever the label's units. -inf when no head was evaluated."""
    scores = []
    for head, r in results.items():
        task = heads[head].task
        if task == "detect":
            score = r["mAP50-95"]
        elif task == "classify":
            score = r["accuracy"]
        else:
            score = 1 / (1 + r["MAE"] / (heads[head].std or 1.0))
        if math.isfinite(score):
            scores.append(score)
    return float(np.mean(scores)) if scores else -math.inf


def format_table(results: dict[str, dict[str, float]]) -> str:
    """One row per head; a column per metric that some head has (a head without it shows -)."""
    shown = [m for ms in METRICS.values() for m in ms if any(m in r for r in results.values())]
    lines = [f"{'head':<16}{'images':>8}" + "".join(f"{m:>10}" for m in shown)]
    for head, r in results.items():
        cells = "".join(f"{r[m]:>10.3f}" if m in r else f"{'-':>10}" for m in shown)
        lines.append(f"{head:<16}{int(r['images']):>8}{cells}")
    return "\n".join(lines)
