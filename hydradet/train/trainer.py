"""The training story, top to bottom: data -> model -> optimizer -> epochs of steps -> eval -> weights."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader
from tqdm import tqdm

from hydradet.config.load import dump_config
from hydradet.config.schema import Config
from hydradet.data.dataset import SourceDataset, collate, split_datasets, with_regress_stats
from hydradet.data.sampler import SourceBatchSampler
from hydradet.data.seeding import SeededBatches, SeededDataset
from hydradet.data.totals import check_totals, describe_data
from hydradet.data.workers import ignore_sigint
from hydradet.errors import ConfigError, TrainingStopped
from hydradet.eval.calibration import calibrated_conf
from hydradet.eval.evaluate import METRICS, evaluate, fitness, format_table
from hydradet.eval.run_log import RunLog
from hydradet.files import atomic_write_text, remove_stale_temporaries
from hydradet.model.detector import HydraDetector
from hydradet.model.summary import model_summary
from hydradet.model.weights import init_from, load_model, read_metadata
from hydradet.train.balance import build_balancer
from hydradet.train.checkpoint import TrainState, checkpoint_path
from hydradet.train.distill import Distiller, old_heads_of
from hydradet.train.distributed import Dist, check_distributable, device_from, from_environment, rank_device
from hydradet.train.ema import ModelEMA
from hydradet.train.interrupt import GracefulStop, batches
from hydradet.train.optim import build_optimizer, lr_factor, set_lr
from hydradet.train.precision import precision_for
from hydradet.train.pseudo import PseudoTeacher, pseudo_counts
from hydradet.train.run_folder import csv_columns, new_run_dir, save_final_weights, write_results_csv
from hydradet.train.step import NonFiniteStep, train_step
from hydradet.train.stops import count_bad_step, out_of_memory_message
from hydradet.train.summary import evaluated_epochs, run_summary


def train(cfg: Config, log: Callable[[str], None] = print) -> Path:
    """Train as the config says; returns the run folder (config.yaml, results.csv, weights/).

    With `train.resume` (a run folder; see train/resume.py for the config it must hold), the run continues from
    its checkpoint at the next batch and ends exactly where the uninterrupted run would have.

    Raises Interrupted after writing the checkpoint when SIGINT (Ctrl-C) or SIGTERM arrives (train/interrupt.py)."""
    with GracefulStop() as stop:
        return _train(cfg, log, stop)


def _train(cfg: Config, log: Callable[[str], None], stop: GracefulStop) -> Path:
    _seed_everything(cfg.train.seed)
    device = device_from(cfg.train.device)
    # Several processes (torchrun): each trains on its share of every batch; only rank 0 logs and writes files.
    dist = from_environment(device)
    if dist.enabled:
        device, log = rank_device(device, dist), (log if dist.main else _silent)
        check_distributable(cfg, dist, device)
    # Pictures and TensorBoard (eval/run_log.py), rank 0 only; a missing optional package stops here.
    run_log = RunLog(cfg if dist.main else _without_pictures(cfg))

    # Data, read and checked before anything is written: every source's train split is one stream; the
    # sampler decides how they mix into batches.
    train_sets, val_sets = split_datasets(cfg, "train"), split_datasets(cfg, "val")
    init_heads = read_metadata(cfg.model.init)["heads"] if cfg.model.init else {}  # a head needs a source or these
    val_sets, data_warnings = check_totals(cfg, train_sets, val_sets, init_heads)  # no train data stops here (exit 2)
    for line in data_warnings:
        log(line)
    cfg = with_regress_stats(cfg, train_sets)  # regress heads learn normalised labels; saved in config and weights
    for line in describe_data(cfg, train_sets, val_sets):
        log(line)
    sizes = [len(ds) for ds in train_sets]
    steps = cfg.train.steps_per_epoch or max(1, math.ceil(sum(sizes) / cfg.train.batch))
    sampler = SourceBatchSampler(sizes, cfg.train.batch, cfg.train.sampling, steps, cfg.train.seed)

    # Model: one backbone and neck, a head per label space; optionally started from a weights file.
    model = HydraDetector(cfg.model, cfg.heads)
    if dist.main:
        log(model_summary(model, cfg.model.imgsz))
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
    if dist.enabled and cfg.model.backbone_norm == "syncbatch":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # statistics over every rank's share
    model.to(device, memory_format=torch.channels_last if cfg.train.channels_last else torch.preserve_format)
    precision = precision_for(cfg.train.amp, device)  # train.amp: autocast dtype, and a GradScaler for fp16
    # EMA of the weights (train.ema): evaluated and saved instead of the raw model; heads move only on their steps.
    ema = ModelEMA(model, cfg.train.ema.decay, cfg.train.ema.tau) if cfg.train.ema.enabled else None
    final = ema.ema if ema is not None else model  # what is evaluated and saved
    # Balancing may have parameters (uncertainty's s_i): the optimizer trains them beside the model's.
    balancer = build_balancer(cfg.train.balance, cfg.heads).to(device)
    optimizer = build_optimizer(model, cfg.train, balancer)
    # train.pseudo: a teacher for the heads a source does not label (train/pseudo.py); a bad teacher file stops here.
    pseudo = PseudoTeacher(cfg, device) if cfg.train.pseudo.enabled else None
    # Everything a checkpoint holds, in one object (train/checkpoint.py); `progress` is where the loop stands.
    state = TrainState(model, optimizer, balancer, sampler, ema, precision.scaler)

    # Only now, with data and model known to be good, does the run get a folder (or a resumed run its state back).
    if cfg.train.resume is not None:
        run_dir = cfg.train.resume
        # rank 0 only: another rank could otherwise delete a temporary rank 0 is about to rename
        leftovers = (
            remove_stale_temporaries(run_dir / "weights") + remove_stale_temporaries(run_dir) if dist.main else []
        )
        for stale in leftovers:
            log(f"removed {stale.name}, left by a write the stop interrupted")
        state.restore(checkpoint_path(run_dir))
        progress = state.progress
        if progress.epoch > cfg.train.epochs:
            done = progress.epoch - 1
            raise ConfigError(
                f"{run_dir} has done {done} epochs and train.epochs is {cfg.train.epochs}: nothing left to resume. "
                f"To train longer: hydradet train --resume {run_dir} train.epochs={done + 10}"
            )
        final.calibrated_conf = dict(progress.calibrated_conf)
        log(f"resumed {run_dir} at epoch {progress.epoch}, step {progress.in_epoch}/{steps} of it")
    else:
        progress = state.progress
        run_dir = dist.broadcast_object(new_run_dir(cfg.project / cfg.name) if dist.main else None)
        if dist.main:
            (run_dir / "weights").mkdir(parents=True)
    if dist.main:
        saved = cfg.model_copy(update={"train": _without_resume(cfg)})
        atomic_write_text(run_dir / "config.yaml", dump_config(saved))
    log(f"run: {run_dir}  device: {device}  precision: {precision.name}" + f"  processes: {dist.world}" * dist.enabled)
    run_log.start(run_dir)
    if pseudo is not None:  # a file teacher's boxes: computed by rank 0 (or read from the run folder), then shared
        if dist.main:
            pseudo.prepare(train_sets, run_dir, log)
        dist.barrier()
        if not dist.main:
            pseudo.prepare(train_sets, run_dir, log)
    source_heads = cfg.source_heads()
    total_steps, warmup = cfg.train.epochs * steps, round(cfg.train.warmup_epochs * steps)
    results_csv = run_dir / "results.csv"
    if dist.main:
        write_results_csv(results_csv, progress.rows, csv_columns(cfg))  # a resumed run's rows up to its checkpoint
    ckpt_file = checkpoint_path(run_dir)

    def save_checkpoint_now(epoch_start_sampler: dict) -> None:
        if not dist.main:  # every rank holds the same state; one writes it
            return
        progress.calibrated_conf = dict(final.calibrated_conf)
        state.save(ckpt_file, epoch_start_sampler)

    loader, mosaic_on = None, None
    stop.armed = True  # from here a first SIGINT / SIGTERM waits for the step's end and a checkpoint
    for epoch in range(progress.epoch, cfg.train.epochs + 1):
        # Mosaic off for the last augment.close_mosaic epochs; workers hold copies of the datasets: a new loader.
        mosaic = epoch <= cfg.train.epochs - cfg.augment.close_mosaic
        if loader is None or mosaic != mosaic_on:
            if mosaic_on and not mosaic:
                log(f"  mosaic off for the last {cfg.augment.close_mosaic} epochs")
            for ds in train_sets:
                ds.mosaic = cfg.augment.mosaic if mosaic and ds.augment is not None and not ds.image_heads else 0.0
            loader, mosaic_on = (
                make_loader(train_sets, sampler, cfg.train.workers, cfg.train.seed, dist, device.type == "cuda"),
                mosaic,
            )
        frozen = frozen_at(cfg, epoch)
        if frozen != model.frozen:
            log(f"  phase from epoch {epoch}: frozen: {', '.join(frozen) or 'nothing'}")
        model.freeze(frozen)
        model.train()  # frozen modules' BatchNorm layers stay in eval mode (HydraDetector.train)
        if progress.in_epoch == 0:
            progress.start_epoch(epoch)
        epoch_start_sampler = sampler.state_dict()
        # Resumed mid-epoch: the sampler is back at the epoch's start; the batches already done are drawn, not loaded.
        sampler.skip_next(progress.in_epoch)
        t0, last_save = time.time() - progress.epoch_seconds, time.time()
        desc = f"epoch {epoch}/{cfg.train.epochs}"
        bar = tqdm(
            loader, desc, steps, leave=True, dynamic_ncols=True, disable=not dist.main, initial=progress.in_epoch
        )
        for batch in batches(bar, stop):
            batch = batch.to(device, cfg.train.channels_last)
            pseudo_weight = None
            if pseudo is not None:  # the EMA teacher labels the batch here; a file teacher's boxes came with it
                pseudo_weight = pseudo.before_step(batch, epoch, final if ema is not None else None)
                if pseudo_weight is not None:  # the teacher took part: results.csv counts its boxes
                    progress.count_pseudo(pseudo_counts(batch, source_heads))
            run_log.train_batch(progress.step, batch)  # train_batch0..2.jpg: the run's first batches, augmented
            lr = cfg.train.lr * lr_factor(progress.step, total_steps, warmup, cfg.train)
            set_lr(optimizer, lr)
            try:
                losses = train_step(
                    model,
                    optimizer,
                    batch,
                    source_heads,
                    cfg.train.grad_clip,
                    balancer,
                    distiller,
                    cfg.train.balance.trunk,
                    dist,
                    precision,
                    pseudo_weight,
                )
            except NonFiniteStep as bad:  # nothing was updated: count it, and stop if it keeps happening
                count_bad_step(cfg, progress, bad, epoch, ckpt_file, log)
            except torch.cuda.OutOfMemoryError:
                raise TrainingStopped(out_of_memory_message(cfg, device, ckpt_file)) from None
            else:
                dist.broadcast_buffers(model)  # BatchNorm statistics: rank 0's everywhere, so the ranks stay identical
                if ema is not None:
                    ema.update(model, losses)  # the heads that had samples in this step (on any rank)
                progress.bad_in_a_row = 0
                for head, value in losses.items():
                    progress.sums[head] = progress.sums.get(head, 0.0) + value
                    progress.counts[head] = progress.counts.get(head, 0) + 1
                bar.set_postfix({h: f"{v / progress.counts[h]:.3f}" for h, v in progress.sums.items()}, refresh=False)
            progress.skipped += batch.skipped
            progress.step += 1
            progress.in_epoch += 1
            if stop.requested(dist) and progress.in_epoch < steps:  # at the epoch's last step: after its end
                break
            # Not inside a run of non-finite steps: the checkpoint to resume from (lower lr) stays the last good one.
            due = time.time() - last_save >= cfg.train.save_period * 60 and not progress.bad_in_a_row
            if progress.in_epoch < steps and due:
                progress.epoch_seconds = time.time() - t0
                save_checkpoint_now(epoch_start_sampler)
                last_save = time.time()
        bar.close()
        if progress.in_epoch < steps:  # stopped by a signal (the only way out before the epoch's end)
            progress.epoch_seconds = time.time() - t0
            save_checkpoint_now(epoch_start_sampler)
            raise stop.interrupted(run_dir, f"epoch {epoch}, step {progress.in_epoch}/{steps}")
        balance_now = balancer.weights_now()  # the weights this epoch's steps used (before DWA moves them)
        balancer.end_epoch({h: progress.sums[h] / progress.counts[h] for h in progress.sums})
        if progress.bad_steps:
            counts = ", ".join(f"{h} {n}" for h, n in progress.bad_steps.items())
            log(f"  non-finite steps skipped this epoch (no update): {counts}")
        if progress.skipped:
            n, first = len(progress.skipped), progress.skipped[0]
            log(f"  skipped: {n} x image failed to decode (replaced by another sample), e.g. {first}")

        row: dict[str, float | int | str] = dict.fromkeys(csv_columns(cfg), "")
        row.update({"epoch": epoch, "lr": f"{lr:.6g}", "time_s": round(time.time() - t0, 1)})
        row["skipped_images"] = int(dist.sum([len(progress.skipped)])[0])  # every rank's replaced images
        row.update({f"loss/{h}": round(float(progress.sums[h] / progress.counts[h]), 4) for h in progress.sums})
        row.update({f"bad_steps/{h}": progress.bad_steps.get(h, 0) for h in cfg.heads})
        row.update({f"balance/{h}": round(w, 4) for h, w in balance_now.items()})
        if pseudo is not None:  # what the teacher put on this epoch's batches (all ranks')
            heads = cfg.pseudo_heads()
            counts = dist.sum([float(progress.pseudo.get(h, [0, 0])[k]) for h in heads for k in (0, 1)])
            for j, h in enumerate(heads):
                row.update({f"pseudo_boxes/{h}": int(counts[2 * j]), f"pseudo_ignore/{h}": int(counts[2 * j + 1])})
        if val_sets and (epoch % cfg.eval.every == 0 or epoch == cfg.train.epochs):
            t_eval = time.time()
            # Several processes: each evaluates its share of the images; the metrics are gathered on every rank.
            shard = (dist.rank, dist.world)
            metrics = evaluate(final, cfg, val_sets, device, run_log.details(), shard, dist.all_gather)
            row["eval_s"] = round(time.time() - t_eval, 1)
            log(format_table(metrics))
            for h, m in metrics.items():
                row.update({f"{h}/{k}": round(float(m[k]), 4) for k in METRICS[cfg.heads[h].task]})
            # Each detect head's default predict conf: where F1 peaks on its own val data (saved in the weights),
            # when there is enough evidence for it (eval/calibration.py).
            final.calibrated_conf = calibrated_conf(metrics)[0]
            # best = highest mean over the heads with val data of mAP50-95 / accuracy / 1 / (1 + MAE / std)
            # (eval.fitness); judged on evaluated epochs only.
            score = float(fitness(metrics, cfg.heads))
            if progress.best_fitness is None or score > progress.best_fitness:
                progress.best_fitness, progress.best_epoch = score, epoch
                progress.best_metrics = {h: {k: float(v) for k, v in m.items()} for h, m in metrics.items()}
                if dist.main:
                    save_final_weights(final, run_dir / "weights" / "best.safetensors", epoch)
        if dist.main:
            save_final_weights(final, run_dir / "weights" / "last.safetensors", epoch)
        # The epoch is done: its row is kept in the checkpoint, and lands in results.csv after the weights.
        progress.rows.append(row)
        progress.start_epoch(epoch + 1)
        save_checkpoint_now(sampler.state_dict())
        if dist.main:
            write_results_csv(results_csv, progress.rows, csv_columns(cfg))
        run_log.epoch_end(epoch, progress.rows, final.calibrated_conf)  # results.png, evaluation pictures
        if epoch < cfg.train.epochs and stop.requested(dist):
            raise stop.interrupted(run_dir, f"the end of epoch {epoch}")
    stop.armed = False  # the run's last files: a signal now stops at once
    if val_sets and progress.best_epoch not in (None, max(evaluated_epochs(progress.rows), default=None)):
        _pictures_of_best(cfg, run_dir, val_sets, device, run_log, dist)
    run_log.close()
    # Never evaluated (no val data, or no epochs): best is the final model.
    if dist.main and progress.best_fitness is None:
        names = ("best",) if cfg.train.epochs else ("best", "last")
        for name in names:
            save_final_weights(final, run_dir / "weights" / f"{name}.safetensors", cfg.train.epochs)
    for line in run_summary(cfg, progress, run_dir) if dist.main else []:
        log(line)
    dist.barrier()  # every rank returns once rank 0 has written the run's last files
    return run_dir


def _pictures_of_best(
    cfg: Config, run_dir: Path, val_sets: list[SourceDataset], device: torch.device, run_log: RunLog, dist: Dist
) -> None:
    """best.safetensors evaluated once more, as Ultralytics validates best.pt at the end, so that the run's
    evaluation pictures (PR / F1 curves, confusion matrices, val batches) are those of the weights it hands over."""
    if not cfg.train.plots:  # the same on every rank: they evaluate together
        return
    details = run_log.details()  # None on ranks other than 0, which draw nothing
    dist.barrier()  # rank 0 wrote best.safetensors
    best = load_model(run_dir / "weights" / "best.safetensors").to(device)
    evaluate(best, cfg, val_sets, device, details, (dist.rank, dist.world), dist.all_gather)
    run_log.best_pictures(best.calibrated_conf)


def _silent(_: str) -> None:
    pass


def _without_pictures(cfg: Config) -> Config:
    """Ranks other than 0 draw and log nothing."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"plots": False, "tensorboard": False})})


def _without_resume(cfg: Config) -> Any:
    return cfg.train.model_copy(update={"resume": None})


def make_loader(
    train_sets: list[SourceDataset],
    sampler: SourceBatchSampler,
    workers: int,
    seed: int = 0,
    dist: Dist | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """Every source's train split as one stream; the sampler decides how they mix into batches, and each sample's
    augmentation is seeded from its batch number (data/seeding.py), whichever worker makes it."""
    return DataLoader(
        SeededDataset(ConcatDataset(train_sets)),
        batch_sampler=SeededBatches(sampler, seed, *((dist.rank, dist.world) if dist else (0, 1))),
        collate_fn=collate,
        num_workers=workers,
        worker_init_fn=ignore_sigint,  # Ctrl-C reaches the workers too: the trainer stops them (train/interrupt.py)
        persistent_workers=workers > 0,
        pin_memory=pin_memory,  # page-locked batches: the copy to the GPU runs beside the step (non_blocking)
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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
