"""The run folder's files: its name, results.csv, and the best / last weights (never with NaN in them)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from hydradet.config.schema import Config
from hydradet.errors import TrainingStopped
from hydradet.eval.evaluate import METRICS
from hydradet.files import atomic_write_text
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import save_weights
from hydradet.train.balance import MOVING_WEIGHTS


def new_run_dir(base: Path) -> Path:
    """base, or base2, base3, ... if taken: runs never overwrite each other."""
    if not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}{n}").exists():
        n += 1
    return base.with_name(f"{base.name}{n}")


def csv_columns(cfg: Config) -> list[str]:
    """Fixed up front, so that rows without evaluation (eval.every > 1) keep the columns aligned."""
    cols = ["epoch", "lr", "time_s", "skipped_images", *(f"loss/{h}" for h in cfg.heads)]
    cols += [*(f"bad_steps/{h}" for h in cfg.heads), "eval_s"]
    if cfg.train.balance.method in MOVING_WEIGHTS:  # Balancer.weights_now
        cols += [f"balance/{h}" for h in cfg.heads]
    if cfg.train.pseudo.enabled:  # what the teacher put on each epoch's batches (train/pseudo.py)
        cols += [f"pseudo_{what}/{h}" for h in cfg.pseudo_heads() for what in ("boxes", "ignore")]
    return cols + [f"{h}/{m}" for h, head in cfg.heads.items() for m in METRICS[head.task]]


def write_results_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """results.csv rewritten whole (crash-safe) from the rows the checkpoint keeps: a resumed run never
    duplicates or loses a row."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, out.getvalue())


def save_final_weights(model: HydraDetector, path: Path, epoch: int) -> None:
    """best / last weights, never with NaN or inf in them (the step guard should make that impossible)."""
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise TrainingStopped(f"not writing {path}: {len(bad)} tensors hold NaN or inf (e.g. {bad[0]})")
    # The run's config (its val data): `hydradet val WEIGHTS` needs no config while that file exists.
    save_weights(model, path, {"epoch": epoch, "config": str((path.parent.parent / "config.yaml").resolve())})
