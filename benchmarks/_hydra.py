"""hydradet's side of benchmarks/partial_labels.py: train a variant through the real trainer (as a user
would), and wrap the trained model as a Predictor with its training cost, like _yolo.py does for YOLO11n.
"""

from __future__ import annotations

import csv
import time

import numpy as np
import torch
from _common import count_flops, detections_to_numpy, hydra_detect
from _measure import Prediction, Predictor, Trained
from _partial_task import TRAIN_BATCH

from hydradet.config.schema import Config
from hydradet.data.dataset import SourceDataset, collate
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import load_model
from hydradet.train.step import head_losses
from hydradet.train.trainer import train


def hydra_predictor(model: HydraDetector) -> Predictor:
    """Every head's detections pooled per image, labels as class names (heads' class names are distinct)."""

    def predict(x: torch.Tensor, conf: float, iou: float, max_det: int) -> Prediction:
        dets = hydra_detect(model, x, conf, iou, max_det)
        out = []
        for i in range(x.shape[0]):
            parts = [(*detections_to_numpy(d[i]), np.array(model.head_cfgs[h].classes)) for h, d in dets.items()]
            out.append(
                (
                    np.concatenate([boxes.reshape(-1, 4) for boxes, _, _, _ in parts]),
                    np.concatenate([scores for _, scores, _, _ in parts]),
                    np.concatenate([names[labels] for _, _, labels, names in parts]),
                )
            )
        return out

    return predict


def train_hydra(cfg: Config, device: torch.device) -> Trained:
    t0 = time.time()
    run = train(cfg, log=lambda _line: None)
    wall = time.time() - t0
    rows = list(csv.DictReader((run / "results.csv").open()))
    loop = sum(float(r["time_s"]) for r in rows)
    model = load_model(run / "weights" / "last.safetensors").to(device)
    n = sum(len(SourceDataset(cfg, s, "train", train=False)) for s, src in cfg.sources.items() if src.train)
    return Trained(
        hydra_predictor(model),
        model,
        wall,
        loop,
        n * cfg.train.epochs,
        _hydra_train_flops(cfg, device),
        lambda x: model(x),
        {"run": str(run)},
    )


def _hydra_train_flops(cfg: Config, device: torch.device) -> float:
    """FLOPs per image of one training step (forward + loss + backward) on a batch drawn from every train
    source in proportion, as the trainer's mixed sampler draws them: each head runs on its own rows only."""
    sets = [SourceDataset(cfg, s, "train", train=True) for s, src in cfg.sources.items() if src.train]
    total = sum(len(d) for d in sets)
    samples = []
    for d in sets:
        samples += [d[i] for i in range(min(len(d), max(1, round(TRAIN_BATCH * len(d) / total))))]
    batch = collate(samples).to(device)
    model = HydraDetector(cfg.model, cfg.heads).to(device).train()  # a fresh copy: FLOPs need no trained weights

    def step() -> None:
        losses = head_losses(model, batch, cfg.source_heads())
        sum(sum(t.values()) for t in losses.values()).backward()  # type: ignore[union-attr]

    return count_flops(step) / len(samples)
