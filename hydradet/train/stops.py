"""Runs that cannot go on: non-finite steps in a row (the loss diverged) and out of memory. Each message says where
to resume from and with what."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from hydradet.config.schema import Config
from hydradet.errors import TrainingStopped
from hydradet.train.checkpoint import Progress
from hydradet.train.step import NonFiniteStep


def count_bad_step(
    cfg: Config, progress: Progress, bad: NonFiniteStep, epoch: int, ckpt: Path, log: Callable[[str], None]
) -> None:
    """A skipped non-finite step: counted per head; `train.max_bad_steps` in a row stop the run (TrainingStopped)."""
    for head in bad.heads:
        progress.bad_steps[head] = progress.bad_steps.get(head, 0) + 1
    if not bad.overflow:  # fp16 overflows are the GradScaler's business (it lowers its scale), not divergence
        progress.bad_in_a_row += 1
    where = f"epoch {epoch}, step {progress.in_epoch + 1}"
    if progress.bad_in_a_row == 1 or (bad.overflow and progress.bad_steps[bad.heads[0]] == 1):
        log(f"  warning: non-finite {bad.what} in head(s) {', '.join(bad.heads)} at {where}: step skipped")
    if progress.bad_in_a_row >= cfg.train.max_bad_steps:
        run_dir = ckpt.parent.parent
        resume = (
            f"resume from its last checkpoint ({ckpt}) with a lower learning rate: "
            f"hydradet train --resume {run_dir} train.lr={cfg.train.lr / 10:g}"
            if ckpt.is_file()
            else f"no checkpoint was written yet: start again with a lower train.lr (e.g. {cfg.train.lr / 10:g})"
        )
        raise TrainingStopped(
            f"training stopped: {progress.bad_in_a_row} steps in a row (train.max_bad_steps) had a non-finite "
            f"{bad.what} in head(s) {', '.join(bad.heads)}, the last at {where} (step {progress.step + 1} of the run); "
            f"the weights were never updated by them. The loss diverged: {resume}"
        )


def out_of_memory_message(cfg: Config, device: torch.device, ckpt: Path) -> str:
    smaller = max(1, cfg.train.batch // 2)
    return (
        f"out of memory on {device} with train.batch={cfg.train.batch} at model.imgsz={cfg.model.imgsz}: start again "
        f"with train.batch={smaller} or a smaller model.imgsz (e.g. {cfg.model.imgsz * 3 // 4 // 32 * 32}), or "
        f"train.amp=bf16 / fp16 if it is off (a resumed run keeps its batch and size; {ckpt} keeps the weights so "
        f"far: model.init=... starts a new run from them)"
    )
