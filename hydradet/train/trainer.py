"""The training story, top to bottom: data -> model -> optimizer -> epochs of steps -> eval -> weights."""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader
from tqdm import tqdm

from hydradet.config.load import dump_config
from hydradet.config.schema import Config
from hydradet.data.dataset import SourceDataset, collate, split_datasets, with_regress_stats
from hydradet.data.sampler import SourceBatchSampler, source_probabilities
from hydradet.errors import ConfigError
from hydradet.eval.evaluate import METRICS, evaluate, fitness, format_table
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import init_from, read_metadata, save_weights
from hydradet.train.balance import build_balancer
from hydradet.train.distill import Distiller, old_heads_of
from hydradet.train.ema import ModelEMA
from hydradet.train.optim import build_optimizer, lr_factor, set_lr
from hydradet.train.step import train_step


def train(cfg: Config, log: Callable[[str], None] = print) -> Path:
    """Train as the config says; returns the run folder (config.yaml, results.csv, weights/)."""
    _seed_everything(cfg.train.seed)
    device = device_from(cfg.train.device)

    # Data, read and checked before anything is written: every source's train split is one stream; the
    # sampler decides how they mix into batches.
    train_sets, val_sets = split_datasets(cfg, "train"), split_datasets(cfg, "val")
    cfg = with_regress_stats(cfg, train_sets)  # regress heads learn normalised labels; saved in config and weights
    for line in describe_data(cfg, train_sets, val_sets):
        log(line)
    sizes = [len(ds) for ds in train_sets]
    steps = cfg.train.steps_per_epoch or max(1, math.ceil(sum(sizes) / cfg.train.batch))
    sampler = SourceBatchSampler(sizes, cfg.train.batch, cfg.train.sampling, steps, cfg.train.seed)
    loader = make_loader(train_sets, sampler, cfg.train.workers)

    # Model: one backbone and neck, a head per label space; optionally started from a weights file.
    model = HydraDetector(cfg.model, cfg.heads)
    distiller = None
    if cfg.model.init:
        report = init_from(model, cfg.model.init)
        for line in report.lines():
            log(line)
        if cfg.train.distill_old_heads:
            # The model as loaded is the teacher of the heads it already had (train/distill.py).
            old = old_heads_of(model, read_metadata(cfg.model.init), report.fresh + report.shape_mismatch)
            log(f"distill: old heads {', '.join(old) or 'none'} learn from the initial model on other sources")
            distiller = Distiller(model, old, cfg.train.distill_weight).to(device)
    model.to(device)
    # EMA of the weights (train.ema): evaluated and saved instead of the raw model; heads move only on their steps.
    ema = ModelEMA(model, cfg.train.ema.decay, cfg.train.ema.tau) if cfg.train.ema.enabled else None
    final = ema.ema if ema is not None else model  # what is evaluated and saved

    # Only now, with data and model known to be good, does the run get a folder.
    run_dir = new_run_dir(cfg.project / cfg.name)
    (run_dir / "weights").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    log(f"run: {run_dir}  device: {device}")
    # Balancing may have parameters (uncertainty's s_i): the optimizer trains them beside the model's.
    balancer = build_balancer(cfg.train.balance, cfg.heads).to(device)
    optimizer = build_optimizer(model, cfg.train, balancer)
    source_heads = cfg.source_heads()
    total_steps, warmup = cfg.train.epochs * steps, round(cfg.train.warmup_epochs * steps)

    results_csv = run_dir / "results.csv"
    best_fitness: float | None = None  # None until an evaluated epoch has written best.safetensors
    step = 0
    for epoch in range(1, cfg.train.epochs + 1):
        if epoch == cfg.train.epochs - cfg.augment.close_mosaic + 1 and any(ds.mosaic for ds in train_sets):
            log(f"  mosaic off for the last {cfg.augment.close_mosaic} epochs")
            for ds in train_sets:
                ds.mosaic = 0.0
            loader = make_loader(train_sets, sampler, cfg.train.workers)  # workers hold copies of the datasets
        frozen = frozen_at(cfg, epoch)
        if frozen != model.frozen:
            log(f"  phase from epoch {epoch}: frozen: {', '.join(frozen) or 'nothing'}")
        model.freeze(frozen)
        model.train()  # frozen modules' BatchNorm layers stay in eval mode (HydraDetector.train)
        t0 = time.time()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        skipped: list[str] = []  # images that failed to decode this epoch; each was replaced by another sample
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.train.epochs}", leave=True, dynamic_ncols=True)
        for batch in bar:
            lr = cfg.train.lr * lr_factor(step, total_steps, warmup, cfg.train)
            set_lr(optimizer, lr)
            losses = train_step(
                model,
                optimizer,
                batch.to(device),
                source_heads,
                cfg.train.grad_clip,
                balancer,
                distiller,
                cfg.train.balance.trunk,
            )
            if ema is not None:
                ema.update(model, losses)  # the heads that had samples in this step
            skipped += batch.skipped
            for head, value in losses.items():
                sums[head] = sums.get(head, 0.0) + value
                counts[head] = counts.get(head, 0) + 1
            bar.set_postfix({h: f"{sums[h] / counts[h]:.3f}" for h in sums}, refresh=False)
            step += 1
        bar.close()
        balancer.end_epoch({h: sums[h] / counts[h] for h in sums})
        if skipped:
            log(f"  skipped: {len(skipped)} x image failed to decode (replaced by another sample), e.g. {skipped[0]}")

        row: dict[str, float | int | str] = dict.fromkeys(_csv_columns(cfg), "")
        row.update({"epoch": epoch, "lr": f"{lr:.6g}", "time_s": round(time.time() - t0, 1)})
        row["skipped_images"] = len(skipped)
        row.update({f"loss/{h}": round(sums[h] / counts[h], 4) for h in sums})
        if val_sets and (epoch % cfg.eval.every == 0 or epoch == cfg.train.epochs):
            t_eval = time.time()
            metrics = evaluate(final, cfg, val_sets, device)
            row["eval_s"] = round(time.time() - t_eval, 1)
            log(format_table(metrics))
            for h, m in metrics.items():
                row.update({f"{h}/{k}": round(m[k], 4) for k in METRICS[cfg.heads[h].task]})
            # Each detect head's default predict conf: where F1 peaks on its own val data (saved in the weights).
            final.calibrated_conf = {h: round(m["f1_conf"], 3) for h, m in metrics.items() if _finite(m.get("f1_conf"))}
            # best = highest mean over the heads with val data of mAP50-95 / accuracy / 1 / (1 + MAE / std)
            # (eval.fitness); judged on evaluated epochs only.
            score = fitness(metrics, cfg.heads)
            if best_fitness is None or score > best_fitness:
                best_fitness = score
                save_weights(final, run_dir / "weights" / "best.safetensors", {"epoch": epoch})
        _append_csv(results_csv, row)
        save_weights(final, run_dir / "weights" / "last.safetensors", {"epoch": epoch})
    if best_fitness is None:  # never evaluated (no val data, or no epochs): best is the final model
        names = ("best",) if cfg.train.epochs else ("best", "last")
        for name in names:
            save_weights(final, run_dir / "weights" / f"{name}.safetensors", {"epoch": cfg.train.epochs})
    log(f"done: {run_dir / 'weights' / 'best.safetensors'}  results: {results_csv}")
    return run_dir


def make_loader(train_sets: list[SourceDataset], sampler: SourceBatchSampler, workers: int) -> DataLoader:
    """Every source's train split as one stream; the sampler decides how they mix into batches."""
    return DataLoader(
        ConcatDataset(train_sets),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def frozen_at(cfg: Config, epoch: int) -> tuple[str, ...]:
    """The module prefixes frozen in this epoch (1-based): by `train.phases`, else `train.freeze` (whole run)."""
    if not cfg.train.phases:
        return tuple(cfg.train.freeze)
    end = 0
    for phase in cfg.train.phases:
        end += phase.epochs
        if epoch <= end:
            return tuple(phase.freeze)
    return ()


def describe_data(cfg: Config, train_sets: list[SourceDataset], val_sets: list[SourceDataset]) -> list[str]:
    """The summary printed at start: what each source gives each head, what is ignored or skipped."""
    lines = ["data:"]
    probs = source_probabilities([len(d) for d in train_sets], cfg.train.sampling) if train_sets else []
    p_of = {d.source: p for d, p in zip(train_sets, probs, strict=True)}
    for ds in [*train_sets, *val_sets]:
        share = f", {p_of[ds.source]:.0%} of train samples" if ds.split == "train" else ""
        per_head = ", ".join(f"{h}: {what}" for h, what in ds.supervision().items())
        lines.append(f"  {ds.source}/{ds.split}: {len(ds)} images{share}; supervises {per_head}")
        if ds.unmapped:
            ignored = ", ".join(f"{c} ({n})" for c, n in ds.unmapped.items() if n)
            if ignored:
                lines.append(f"    ignored classes (mapped to no head): {ignored}")
        for reason, n in ds.data.skipped.items():
            lines.append(f"    skipped: {n} x {reason}{_first(ds.data.examples.get(reason))}")
        for reason, n in ds.data.warnings.items():
            lines.append(f"    warning: {n} x {reason}{_first(ds.data.examples.get(reason))}")
    for head in cfg.heads:
        if not any(head in cfg.sources[d.source].labels for d in train_sets):
            moved_by = (
                "only distillation from model.init can move it" if cfg.train.distill_old_heads else "it will not change"
            )
            lines.append(f"  note: head {head!r} has no train source; {moved_by}")
    return lines


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _first(places: list[str] | None) -> str:
    return f", e.g. {places[0]}" if places else ""


def _csv_columns(cfg: Config) -> list[str]:
    """Fixed up front, so that rows without evaluation (eval.every > 1) keep the columns aligned."""
    cols = ["epoch", "lr", "time_s", "skipped_images", *(f"loss/{h}" for h in cfg.heads), "eval_s"]
    return cols + [f"{h}/{m}" for h, head in cfg.heads.items() for m in METRICS[head.task]]


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def new_run_dir(base: Path) -> Path:
    """base, or base2, base3, ... if taken: runs never overwrite each other."""
    if not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}{n}").exists():
        n += 1
    return base.with_name(f"{base.name}{n}")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_from(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but no CUDA device is available; use cpu or auto")
    return torch.device(name)
