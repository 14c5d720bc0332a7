"""Per-head evaluation: each val set is run once, through the heads its source labels; each head is scored
on its own val data only (a head is never scored on images whose source does not label it)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from hydradet.config.schema import Config
from hydradet.data.dataset import SourceDataset, collate, unletterbox
from hydradet.eval.coco_map import ImageBoxes, coco_map
from hydradet.model.detector import HydraDetector


@torch.no_grad()
def evaluate(
    model: HydraDetector, cfg: Config, val_sets: list[SourceDataset], device: torch.device
) -> dict[str, dict[str, float]]:
    """head -> {"mAP50-95", "mAP50", "images"} over the val splits of the sources that label that head."""
    was_training = model.training
    model.eval()
    gts: dict[str, list[ImageBoxes]] = {h: [] for h in model.heads}
    preds: dict[str, list[ImageBoxes]] = {h: [] for h in model.heads}
    for ds in val_sets:
        heads = [h for h in cfg.sources[ds.source].heads() if h in model.heads]
        loader = DataLoader(ds, batch_size=cfg.eval.batch, collate_fn=collate, num_workers=min(cfg.train.workers, 2))
        for batch in loader:
            outputs = model(batch.images.to(device), dict.fromkeys(heads))
            dets = {
                h: model.heads[h].postprocess(outputs[h], cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det) for h in heads
            }
            for i, (scale, size) in enumerate(zip(batch.scales, batch.orig_sizes, strict=True)):
                # Ground truth straight from the records, in original pixels: only predictions travel back.
                targets = ds.head_targets(batch.indices[i], size)
                for head in heads:
                    t, d = targets[head], dets[head][i]
                    ignore, ignore_labels = t.get("ignore"), t.get("ignore_labels")
                    gts[head].append(
                        ImageBoxes(
                            t["boxes"].numpy(),
                            t["labels"].numpy(),
                            ignore=None if ignore is None else ignore.numpy(),
                            ignore_labels=None if ignore_labels is None else ignore_labels.numpy(),
                        )
                    )
                    boxes = unletterbox(d.boxes.cpu(), scale, size)
                    preds[head].append(ImageBoxes(boxes.numpy(), d.labels.cpu().numpy(), d.scores.cpu().numpy()))
    model.train(was_training)
    results = {}
    for head in model.heads:
        if gts[head]:
            results[head] = {**coco_map(gts[head], preds[head], cfg.heads[head].classes), "images": len(gts[head])}
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'head':<16}{'images':>8}{'mAP50-95':>10}{'mAP50':>8}"]
    for head, r in results.items():
        lines.append(f"{head:<16}{int(r['images']):>8}{r['mAP50-95']:>10.3f}{r['mAP50']:>8.3f}")
    return "\n".join(lines)
