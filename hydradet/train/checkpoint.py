"""The training checkpoint: everything the next step depends on, in one file, so a killed run resumes exactly.

`runs/NAME/weights/checkpoint.pt` is written at each epoch's end and every `train.save_period` minutes within an
epoch. It holds: the model (with its non-persistent buffers: each detect head's running positive count), the EMA
copy and each head's EMA update counter, the optimizer state (momentum, Adam moments, step counts), the balancer's
state (uncertainty's s_i, DWA's loss history), the sampler's state at the start of the epoch plus the steps done in
it (so the epoch's remaining batches are the same; data/seeding.py makes their augmentation the same too), every
random generator (python, numpy, torch, CUDA), best fitness, results.csv's rows and the epoch's running sums.

Format: `torch.save` of tensors and plain data, read back with `torch.load(weights_only=True)`, which refuses
anything that could run code. Written through hydradet/files.py (temporary + fsync + rename).
"""

from __future__ import annotations

import copy
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hydradet.errors import ConfigError
from hydradet.files import atomic_save

CHECKPOINT = "checkpoint.pt"
FORMAT_VERSION = 1


@dataclass
class Progress:
    """Where the loop stands and what it has gathered: the part of the checkpoint that is not tensors."""

    epoch: int = 1  # the epoch to run (1-based); at an epoch's end, the next one
    in_epoch: int = 0  # steps of `epoch` already done
    step: int = 0  # steps done since the start (drives the learning-rate schedule)
    epoch_seconds: float = 0.0  # training time spent in `epoch` so far
    best_fitness: float | None = None  # None until an evaluated epoch has written best.safetensors
    rows: list[dict[str, Any]] = field(default_factory=list)  # results.csv, one row per finished epoch
    sums: dict[str, float] = field(default_factory=dict)  # head -> sum of its step losses in `epoch`
    counts: dict[str, int] = field(default_factory=dict)  # head -> its steps in `epoch`
    skipped: list[str] = field(default_factory=list)  # images replaced in `epoch` (failed to decode)
    bad_steps: dict[str, int] = field(default_factory=dict)  # head -> non-finite steps skipped in `epoch`
    bad_in_a_row: int = 0  # consecutive skipped steps (train.max_bad_steps stops the run)
    calibrated_conf: dict[str, float] = field(default_factory=dict)  # each detect head's F1-optimal conf
    pseudo: dict[str, list[int]] = field(default_factory=dict)  # head -> [teacher boxes, ignore regions] in `epoch`
    best_epoch: int | None = None  # the epoch best.safetensors holds
    best_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # its evaluation, head -> metric -> value

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.in_epoch, self.epoch_seconds = epoch, 0, 0.0
        self.sums, self.counts, self.skipped, self.bad_steps, self.pseudo = {}, {}, [], {}, {}

    def count_pseudo(self, counts: dict[str, tuple[int, int]]) -> None:
        """Add one batch's `train.pseudo` boxes and ignore regions per head (results.csv pseudo_boxes/HEAD ...)."""
        for head, (boxes, ignore) in counts.items():
            total = self.pseudo.setdefault(head, [0, 0])
            total[0] += boxes
            total[1] += ignore


@dataclass
class TrainState:
    """Everything a checkpoint saves and a resumed run restores, in one object (the trainer's state).

    ema: train/ema.py ModelEMA or None; scaler: the fp16 GradScaler or None; sampler: data/sampler.py's
    SourceBatchSampler (saved as it stood at the epoch's start; `progress.in_epoch` says how far into it)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    balancer: nn.Module
    sampler: Any
    ema: Any = None
    scaler: Any = None
    progress: Progress = field(default_factory=Progress)

    def save(self, path: Path, epoch_start_sampler: dict[str, Any]) -> None:
        """Write the checkpoint (crash-safe), the sampler as `epoch_start_sampler` (its state at the epoch's start)."""
        parts: dict[str, Any] = {"model": self.model, "optimizer": self.optimizer, "balancer": self.balancer}
        if self.scaler is not None:
            parts["scaler"] = self.scaler
        if self.ema is not None:
            parts |= {"ema": self.ema.ema, "ema_updates": dict(self.ema.updates)}
        save_checkpoint(path, self.progress, epoch_start_sampler, **parts)

    def restore(self, path: Path) -> None:
        """Every piece of state back from the checkpoint at `path` (ConfigError naming it if it cannot be read),
        the random generators included: the next step is the one the interrupted run would have taken."""
        ckpt = load_checkpoint(path)
        self.progress = ckpt["progress"]
        load_full_state(self.model, ckpt["model"])
        if self.ema is not None:
            load_full_state(self.ema.ema, ckpt["ema"])
            self.ema.updates = dict(ckpt["ema_updates"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.balancer.load_state_dict(ckpt["balancer"])
        if self.scaler is not None and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.sampler.load_state_dict(ckpt["sampler"])
        set_rng_states(ckpt["rng"])


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "weights" / CHECKPOINT


def full_state(module: nn.Module) -> dict[str, Any]:
    """state_dict plus the non-persistent buffers (left out of weights files, but training state)."""
    state = dict(module.state_dict())
    state.update({f"{name}": b for name, b in module.named_buffers() if name not in state})
    # copies: the checkpoint must not change while the run goes on; `_extra_state` entries are plain data
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in state.items()}


def load_full_state(module: nn.Module, state: dict[str, Any]) -> None:
    buffers = dict(module.named_buffers())
    persistent = module.state_dict().keys()
    module.load_state_dict({k: v for k, v in state.items() if k in persistent}, strict=True)
    for name, value in state.items():
        if name not in persistent:
            buffers[name].copy_(value)


def rng_states() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    cuda = [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np_state = dict(states["numpy"])
    np_state["state"] = {**np_state["state"], "key": np.asarray(np_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(np_state)
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():  # a machine with fewer GPUs takes the first ones' states
        for i, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, i)


def save_checkpoint(path: Path, progress: Progress, sampler_state: dict[str, Any], **parts: Any) -> None:
    """parts: model, ema, ema_updates, optimizer, balancer (objects with state_dict, or plain data)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "progress": asdict(progress),
        "sampler": sampler_state,
        "rng": rng_states(),
    }
    for name, part in parts.items():
        if isinstance(part, nn.Module):
            payload[name] = full_state(part)
        elif hasattr(part, "state_dict"):
            payload[name] = part.state_dict()
        else:
            payload[name] = part
    atomic_save(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's content, `progress` as a Progress. ConfigError (naming the file) if it cannot be read."""
    if not path.is_file():
        raise ConfigError(
            f"{path}: no checkpoint to resume from; the run stopped before its first checkpoint "
            "(one is written every train.save_period minutes and at each epoch's end). Start it again instead"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files raise many types; all mean "cannot resume from this"
        raise ConfigError(f"{path}: not a readable hydradet checkpoint ({e})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: not a hydradet checkpoint of format {FORMAT_VERSION}")
    payload["progress"] = Progress(**payload["progress"])
    return payload
