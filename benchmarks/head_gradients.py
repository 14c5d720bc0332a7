"""How hard each head pulls on the shared trunk: per head, the norm of its loss's gradient on the backbone + neck,
over the first steps of training on the real-photo task (benchmarks/_real_data.py), for each loss normalisation.

A head whose batches hold few of its objects divides its loss by few positives (FCOS); if that head then pulls
several times harder on the trunk than the others, it steers the shared features (negative transfer). This prints,
per setting, each head's mean trunk-gradient norm, its positives per batch, and the ratio of the two heads' pulls.

    .venv/bin/python benchmarks/head_gradients.py                 # 30 mixed batches, quick task, ~4 min
    .venv/bin/python benchmarks/head_gradients.py --steps 60 --set model.assigner=atss
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import markdown_table, parse_variant
from _real_data import HEADS, build_task, restrict
from real_partial import RECIPE

from hydradet.config import load_config
from hydradet.data.dataset import split_datasets
from hydradet.data.sampler import SourceBatchSampler
from hydradet.model.detector import HydraDetector
from hydradet.train.optim import build_optimizer
from hydradet.train.step import head_losses, train_step
from hydradet.train.trainer import make_loader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="training steps measured (the model trains meanwhile)")
    ap.add_argument("--variant", action="append", default=None, help="NAME:key=value,... (default: batch, running)")
    ap.add_argument("--set", action="append", default=[], help="an override for every setting")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/head_gradients"))
    args = ap.parse_args()
    variants = args.variant or [
        "loss_norm=batch:model.loss_norm=batch,train.balance.trunk=sum",
        "loss_norm=running:model.loss_norm=running,train.balance.trunk=sum",
        "running + trunk=positives (default):model.loss_norm=running,train.balance.trunk=positives",
    ]
    task = restrict(build_task(args.out.resolve() / "data", quick=True), HEADS)
    rows = []
    for name, overrides in map(parse_variant, variants):
        cfg = load_config(task, [*RECIPE, "train.workers=1", *args.set, *overrides])
        torch.manual_seed(0)
        sets = split_datasets(cfg, "train")
        sampler = SourceBatchSampler([len(d) for d in sets], cfg.train.batch, cfg.train.sampling, args.steps, 0)
        model = HydraDetector(cfg.model, cfg.heads).train()
        opt = build_optimizer(model, cfg.train)
        trunk = [p for m in (model.backbone, model.neck) for p in m.parameters()]
        pulls: dict[str, list[float]] = {h: [] for h in HEADS}
        positives: dict[str, list[int]] = {h: [] for h in HEADS}
        for batch in make_loader(sets, sampler, cfg.train.workers):
            losses = head_losses(model, batch, cfg.source_heads(), trunk=cfg.train.balance.trunk)
            for h, terms in losses.items():
                grads = torch.autograd.grad(sum(terms.values()), trunk, retain_graph=True, allow_unused=True)
                pulls[h].append(float(torch.sqrt(sum((g**2).sum() for g in grads if g is not None))))
                rows_h = [t[h] for t in batch.targets if h in t]
                positives[h].append(sum(len(t["boxes"]) for t in rows_h))
            train_step(model, opt, batch, cfg.source_heads(), cfg.train.grad_clip, trunk=cfg.train.balance.trunk)
        means = {h: float(np.mean(v)) for h, v in pulls.items()}
        boxes = [float(np.mean(positives[h])) for h in HEADS]
        rows.append([name, *(means[h] for h in HEADS), *boxes, means["animal"] / means["person"]])
        print(rows[-1], flush=True)
    headers = ["setting", *(f"{h} pull" for h in HEADS), *(f"{h} boxes/batch" for h in HEADS), "animal / person"]
    print("\n" + markdown_table(headers, rows))


if __name__ == "__main__":
    main()
